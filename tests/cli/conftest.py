"""Shared by the command-line tests: a tiny trained digits run (4 steps of an 8-channel U-Net, ~5 s) and the
one-line-error check."""

from __future__ import annotations

import pytest

from cli_helpers import TINY

from kuosan.cli import main


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A trained digits run folder (do not modify it: tests share it)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TINY, "--steps", "4", "--out", str(out)]) == 0
    return out


@pytest.fixture
def err(capsys):
    """err(argv) -> the one stderr line of a refused command (asserting exit code 2, no traceback)."""

    def run(argv, code=2):
        got = main(argv)
        captured = capsys.readouterr()
        e = captured.err.strip()
        assert got == code, (got, e)
        assert "\n" not in e and e.startswith("kuosan: error:"), e
        assert "Traceback" not in e
        return e

    return run
