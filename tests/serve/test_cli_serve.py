"""``kuosan serve``: bad input is one line and exit code 2 before anything starts; a real start serves the page."""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'kuosan[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install 'kuosan[serve]'")

from serve_helpers import serve_cli  # noqa: E402

from kuosan.cli import main  # noqa: E402


@pytest.fixture
def err(capsys):
    def run(argv: list[str]) -> str:
        code = main(argv)
        e = capsys.readouterr().err.strip()
        assert code == 2, (code, e)
        assert "\n" not in e and e.startswith("kuosan: error:") and "Traceback" not in e, e
        return e

    return run


def test_not_a_run(err, tmp_path):
    assert "does not exist" in err(["serve", str(tmp_path / "missing")])
    assert "not a kuosan run" in err(["serve", str(tmp_path)])


def test_port_in_use(err, curves_run):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert f"{port} is already in use" in err(["serve", str(curves_run), "--port", str(port)])


@pytest.mark.parametrize("argv, words", [
    (["--host", "not a host"], ["--host must be an IP address"]),
    (["--host", "192.0.2.1"], ["not an address of this machine"]),  # TEST-NET-1: never this machine's
    (["--port", "70000"], ["--port", "0..65535"]),
    (["--port", "x"], ["--port"]),
    (["--workers", "9"], ["--workers", "at most 8"]),
    (["--workers", "0"], ["--workers"]),
    (["--device", "tpu"], ["--device"]),
])
def test_bad_flags(err, curves_run, argv, words):
    e = err(["serve", str(curves_run), *argv])
    assert all(w in e for w in words), e


def test_bad_out(err, curves_run, tmp_path):
    assert "not an existing folder" in err(["serve", str(curves_run), "--out", str(tmp_path / "nope")])


def test_missing_extra_is_one_line(err, curves_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn -> ImportError
    assert "pip install 'kuosan[serve]'" in err(["serve", str(curves_run)])


def test_serves_the_page(curves_run, tmp_path):
    """The real command: binds 127.0.0.1 on a free port, serves the page and the API, refuses ../."""
    with serve_cli(curves_run, tmp_path / "out") as url:
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url, timeout=30) as r:
            assert "kuosan explorer" in r.read().decode()
        with urllib.request.urlopen(url + "api/info", timeout=30) as r:
            assert json.load(r)["shape"] == [64]
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url + "files/run/" + "..%2f" * 12 + "etc%2fpasswd", timeout=30)
        assert e.value.code == 404
        rebound = urllib.request.Request(url + "api/info", headers={"Host": "attacker.example"})  # DNS rebinding
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(rebound, timeout=30)
        assert e.value.code == 400
