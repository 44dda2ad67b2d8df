"""The page's API through FastAPI's TestClient: generation (equal to ``kuosan sample``), progress events, cancel,
bounds (4xx with a one-line JSON error), files outside the run refused, two jobs at once."""

from __future__ import annotations

import io
import os
import shutil
import time
from urllib.parse import quote

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'kuosan[serve]'")
pytest.importorskip("httpx", reason="fastapi's TestClient needs httpx")

from serve_helpers import make_client  # noqa: E402

from kuosan.build import load_denoiser  # noqa: E402
from kuosan.guidance import classifier_free  # noqa: E402
from kuosan.sampling import sample  # noqa: E402


@pytest.fixture(scope="module")
def curves_copy(curves_run, secret, tmp_path_factory):
    """A copy of the curves run with a link pointing out of it (to the secret) and a hidden file."""
    root = tmp_path_factory.mktemp("copy") / "run"
    shutil.copytree(curves_run, root)
    os.symlink(secret, root / "leak.txt")
    (root / ".hidden").write_text("hidden")
    return root


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("out")


@pytest.fixture(scope="module")
def client(curves_copy, out_dir):
    with make_client(curves_copy, out_dir) as c:
        yield c


@pytest.fixture(scope="module")
def digits(digits_run, tmp_path_factory):
    with make_client(digits_run, tmp_path_factory.mktemp("out"), workers=2) as c:
        yield c


def wait(c, job_id: str, timeout: float = 60.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = c.get(f"/api/jobs/{job_id}").json()
        if st["state"] in ("done", "cancelled", "error"):
            return st
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {st}")


def refused(r, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    msg = r.json()["error"]
    assert "\n" not in msg and "Traceback" not in msg and all(w in msg for w in words), msg
    return msg


def test_info_lists_the_samplers_for_the_path(client, moons_run, tmp_path):
    info = client.get("/api/info").json()
    names = [s["name"] for s in info["samplers"]]
    assert info["shape"] == [64] and info["num_classes"] == 0 and "ddpm" in names and "bespoke" not in names
    assert info["pictures"] == ["samples.png", "loss.png"] and info["limits"]["max_steps"] == 1000
    with make_client(moons_run, tmp_path) as m:  # flow path: ancestral DDPM is defined on the β table only
        mi = m.get("/api/info").json()
        assert "ddpm" not in [s["name"] for s in mi["samplers"]] and mi["num_classes"] == 2


def test_generate_equals_kuosan_sample(client, curves_run):
    st = client.post("/api/generate", json={"sampler": "dpm++2m", "steps": 8, "grid": "logsnr", "n": 6,
                                            "seed": 11})
    assert st.status_code == 202
    st = wait(client, st.json()["id"])
    assert st["state"] == "done" and st["step"] == 8 and st["error"] is None
    x = np.load(io.BytesIO(client.get(st["array"]).content))["x"]
    D, _, _ = load_denoiser(curves_run)
    assert np.array_equal(x, sample(D, "dpm++2m", (6, 64), 8, seed=11, grid="logsnr").numpy())
    png = client.get(st["image"])
    assert png.headers["content-type"] == "image/png" and Image.open(io.BytesIO(png.content)).format == "PNG"


def test_image_grid_has_the_expected_size(digits):
    st = wait(digits, digits.post("/api/generate", json={"steps": 3, "n": 16}).json()["id"])
    img = Image.open(io.BytesIO(digits.get(st["image"]).content))
    side = 4 * (8 + 1) + 1  # 4×4 digits of 8×8 with 1-pixel gaps, enlarged ×(256 // 37) = 6
    assert img.size == (6 * side, 6 * side) and img.mode == "L"
    prev = Image.open(io.BytesIO(digits.get(f"/api/jobs/{st['id']}/preview.png?what=x").content))
    assert prev.size == img.size


def test_one_event_per_step_then_done(client):
    job = client.post("/api/generate", json={"sampler": "heun", "steps": 9, "n": 2}).json()
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    events = [ln[len("event: "):] for ln in lines if ln.startswith("event: ")]
    assert events == ["step"] * 9 + ["done"]
    assert [f'data: {{"step": {i}, "steps": 9}}' for i in range(1, 10)] == [ln for ln in lines if '"step": ' in ln
                                                                             and "state" not in ln]
    preview = client.get(f"/api/jobs/{job['id']}/preview.png")
    assert preview.status_code == 200 and Image.open(io.BytesIO(preview.content)).format == "PNG"


def test_cancel_stops_a_long_generation(digits):
    job = digits.post("/api/generate", json={"sampler": "pc", "steps": 1000, "n": 64}).json()
    end = time.monotonic() + 60
    while digits.get(f"/api/jobs/{job['id']}").json()["step"] < 2 and time.monotonic() < end:
        time.sleep(0.01)
    assert digits.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
    st = wait(digits, job["id"], timeout=30)
    assert st["state"] == "cancelled" and 2 <= st["step"] < 1000 and st["image"] is None
    assert digits.get(f"/files/out/{job['id']}.png").status_code == 404
    with digits.stream("GET", f"/api/jobs/{job['id']}/events") as r:
        events = [ln for ln in r.iter_lines() if ln.startswith("event: ")]
    assert events[-1] == "event: cancelled" and len(events) == st["step"] + 1


def test_two_jobs_at_once_each_get_their_own_samples(digits, digits_run):
    a = digits.post("/api/generate", json={"sampler": "ddim", "steps": 30, "n": 8, "seed": 1}).json()
    b = digits.post("/api/generate", json={"sampler": "ddim", "steps": 30, "n": 8, "seed": 2}).json()
    sa, sb = wait(digits, a["id"]), wait(digits, b["id"])
    assert sa["state"] == sb["state"] == "done"
    D, _, _ = load_denoiser(digits_run)
    for st, seed in ((sa, 1), (sb, 2)):
        x = np.load(io.BytesIO(digits.get(st["array"]).content))["x"]
        assert np.array_equal(x, sample(D, "ddim", (8, 1, 8, 8), 30, seed=seed).numpy())


def test_too_many_jobs_is_429(digits):
    ids = [digits.post("/api/generate", json={"sampler": "pc", "steps": 1000, "n": 64}).json()["id"]
           for _ in range(8)]
    refused(digits.post("/api/generate", json={"steps": 2}), 429, "already queued or running")
    for i in ids:
        digits.post(f"/api/jobs/{i}/cancel")
    assert all(wait(digits, i)["state"] == "cancelled" for i in ids)
    assert digits.post("/api/generate", json={"steps": 2}).status_code == 202


@pytest.mark.parametrize("body, words", [
    ({"steps": 0}, ["steps", "greater than or equal to 1"]),
    ({"steps": 1001}, ["steps", "less than or equal to 1000", "1001"]),
    ({"steps": 2.5}, ["steps", "integer"]),
    ({"steps": "20"}, ["steps", "integer"]),
    ({"n": 65}, ["n", "64"]),
    ({"seed": -1}, ["seed"]),
    ({"seed": 2**63}, ["seed"]),
    ({"guidance": -1}, ["guidance"]),
    ({"guidance": 21}, ["guidance", "20"]),
    ({"grid": "optimised"}, ["grid"]),
    ({"evil": 1}, ["evil", "not permitted"]),
])
def test_out_of_range_is_422(client, body, words):
    refused(client.post("/api/generate", json=body), 422, *words)


@pytest.mark.parametrize("body, words", [
    ({"sampler": "nope"}, ["sampler 'nope' is not available", "ddim"]),
    ({"sampler": "bespoke"}, ["not available"]),
    ({"label": 0}, ["not class-conditional"]),
    ({"guidance": 2.0}, ["guidance", "class"]),
])
def test_requests_this_run_cannot_take_are_400(client, body, words):
    refused(client.post("/api/generate", json=body), 400, *words)


def test_class_conditional_run(moons_run, tmp_path):
    """The label reaches the network (equal to sample() with cond y); classes and guidance are checked."""
    D, _, _ = load_denoiser(moons_run)
    with make_client(moons_run, tmp_path) as c:
        refused(c.post("/api/generate", json={"label": 2}), 400, "0..1", "2")
        refused(c.post("/api/generate", json={"sampler": "ddpm"}), 400, "not available")
        xs = []
        for label in (0, 1):
            st = wait(c, c.post("/api/generate", json={"steps": 5, "n": 4, "label": label}).json()["id"])
            xs.append(np.load(io.BytesIO(c.get(st["array"]).content))["x"])
            want = sample(D, "ddim", (4, 2), 5, cond={"y": torch.full((4,), label)})
            assert np.array_equal(xs[-1], want.numpy())
        assert not np.array_equal(xs[0], xs[1])
        assert c.get("/api/info").json()["guidance"] is True
        st = wait(c, c.post("/api/generate", json={"steps": 5, "n": 4, "label": 1, "guidance": 3.0}).json()["id"])
        guided = np.load(io.BytesIO(c.get(st["array"]).content))["x"]
        want = sample(classifier_free(D, 3.0, null_label=2), "ddim", (4, 2), 5, cond={"y": torch.full((4,), 1)})
        assert np.array_equal(guided, want.numpy()) and not np.array_equal(guided, xs[1])


@pytest.mark.parametrize("url, status, words", [
    ("/api/forward?u=1.5", 422, ["u", "1.5"]),
    ("/api/forward?u=nan", 422, ["u"]),
    ("/api/forward.png?u=-0.1", 422, ["u"]),
    ("/api/forward?seed=-1", 422, ["seed"]),
    ("/api/jobs/not-an-id", 422, ["job_id"]),
    ("/api/jobs/" + "0" * 32, 404, ["no job"]),
    ("/api/jobs/" + "0" * 32 + "/preview.png", 404, ["no job"]),
    ("/nowhere", 404, ["Not Found"]),
])
def test_bad_queries_are_4xx_json(client, url, status, words):
    refused(client.get(url), status, *words)


def test_forward_api(client):
    st = client.get("/api/forward?u=0.25&seed=4").json()
    assert st["dim"] == 64 and len(st["eigenvalues"]) == 64 and st["log_snr"] is not None
    png = client.get("/api/forward.png?u=0.25&seed=4")
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).format == "PNG"


def test_run_files_are_readable(client, curves_copy):
    r = client.get("/files/run/config.toml")
    assert r.status_code == 200 and r.content == (curves_copy / "config.toml").read_bytes()
    assert client.get("/files/run/samples.png").headers["content-type"] == "image/png"


@pytest.mark.parametrize("url", [
    "/files/run/" + "..%2f" * 12 + "etc%2fpasswd",
    "/files/run/%2fetc%2fpasswd",
    "/files/run/checkpoints%2f..%2f..%2fsecret.txt",
    "/files/run/leak.txt",
    "/files/run/.hidden",
    "/files/run/{up_to_secret}",
    "/files/out/{out_to_run}",
    "/files/run/%00",
    "/files/run/",
])
def test_files_outside_are_refused(client, secret, curves_copy, out_dir, url):
    run_file = os.path.relpath(curves_copy / "config.toml", out_dir)
    assert (out_dir / run_file).is_file()  # it exists: refused only because it is outside the outputs folder
    url = url.format(up_to_secret=quote(os.path.relpath(secret, curves_copy), safe=""),
                     out_to_run=quote(run_file, safe=""))
    r = client.get(url)
    assert r.status_code == 404 and "root:" not in r.text and secret.read_text() not in r.text
    assert "error" in r.json()


def test_file_outside_by_raw_path_is_refused(client, secret):
    """An unnormalised ``..`` in the raw request path (what a client that does not clean URLs sends)."""
    rel = os.path.relpath(secret, "/")
    for raw in (f"/files/run/../../../../../../{rel}", f"/files/run//{secret}", f"/static/../../../../../../{rel}"):
        r = client.request("GET", "http://testserver" + raw.replace("..", "%2e%2e"))
        assert r.status_code == 404 and secret.read_text() not in r.text, raw


def test_unreadable_data_is_a_409_for_the_explorer_only(curves_run, tmp_path):
    from dataclasses import replace

    from fastapi.testclient import TestClient

    from kuosan.serve import create_app, load_run

    run = replace(load_run(curves_run), data_name=str(tmp_path / "moved.npz"))  # the data moved since training
    with TestClient(create_app(run, tmp_path)) as c:
        refused(c.get("/api/forward?u=0.5"), 409, "cannot be read", "moved.npz")
        refused(c.get("/api/forward.png?u=0.5"), 409, "cannot be read")
        assert wait(c, c.post("/api/generate", json={"steps": 2, "n": 2}).json()["id"])["state"] == "done"


@pytest.mark.parametrize("exc, words", [(RuntimeError("sampler 'ddim' produced non-finite values\nin 2 samples"),
                                         "non-finite values in 2 samples"),
                                        (KeyError("bug"), "internal error (KeyError)")])
def test_a_failing_job_reports_one_line(client, monkeypatch, exc, words):
    import kuosan.serve.jobs as jobs

    def fail(*a, **kw):
        raise exc

    monkeypatch.setattr(jobs, "draw", fail)
    job = client.post("/api/generate", json={"steps": 3}).json()
    st = wait(client, job["id"])
    assert st["state"] == "error" and words in st["error"] and "\n" not in st["error"] and st["seconds"] is not None
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as r:
        assert [ln for ln in r.iter_lines() if ln.startswith("event: ")] == ["event: error"]
