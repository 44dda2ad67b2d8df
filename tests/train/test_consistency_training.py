"""Consistency models trained end to end: a tiny consistency training on the ring mixture gets closer to the exact
consistency function and samples the ring in 1 and 2 steps; resume is bit-exact through the curriculum; the loop
gives the objective its step and starts cd/ect runs from the teacher; ``kuosan sample`` picks the consistency
sampler and refuses bad levels and other samplers with one line and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kuosan.build import build_net, load_denoiser, make_denoiser, make_objective_from, make_param_from, make_path_from
from kuosan.cli import main
from kuosan.config import Config, apply_overrides
from kuosan.exact import ring
from kuosan.sampling import sample
from kuosan.train import train
from kuosan.train.step import draw_batch
from train_helpers import same_weights, tiny

F64 = torch.float64
CM = {"path.kind": "ve", "objective.prediction": "consistency"}
RING = {**CM, "data.name": "ring", "data.n": 2000, "net.mlp_hidden": 64, "net.mlp_depth": 2, "optim.steps": 200,
        "optim.batch_size": 128, "optim.warmup": 10, "consistency.s0": 4, "consistency.s1": 64, "log.log_every": 50,
        "log.val_every": 200, "log.ckpt_every": 200, "log.n_samples": 16, "run.threads": 1, "run.precision": "fp32"}


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cm") / "ring"
    train(apply_overrides(Config(), {**RING, "log.out": str(out)}).validate(), progress=False)
    return out


def _initial(cfg: Config, meta: dict):
    torch.manual_seed(cfg.run.seed)  # the loop's seeded initial weights
    return make_denoiser(build_net(cfg, meta).eval(), cfg)


@pytest.mark.slow  # ~15 s on the loaded 2-core VM, mostly the 200-step training of the fixture
def test_ct_on_the_ring_approaches_the_exact_consistency_function_and_samples_it(ring_run):
    """Against the untrained network: the loss at the final discretisation (fixed pairs and noise), the RMSE of
    f(x_σ, σ) to the exact PF-ODE endpoint, and the exact log-likelihood of 1- and 2-step samples all improve."""
    from kuosan.exact.consistency import ExactConsistency

    D, meta, cfg = load_denoiser(ring_run)
    assert D.kind == "consistency"
    D0 = _initial(cfg, meta)
    mix = ring()
    g = torch.Generator().manual_seed(9)
    x0 = mix.sample(256, g).float()
    obj = make_objective_from(cfg, make_path_from(cfg), make_param_from(cfg), bits=None)
    t, _ = obj.times.sample(256, g)  # the final discretisation: N = s1 + 1
    z = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        loss = [float(obj(d.raw, x0, t=t, eps=z).total.mean()) for d in (D0, D)]
    assert loss[1] < 0.8 * loss[0]  # CT's loss keeps its target's noise: it falls by a third here
    f_exact = ExactConsistency(mix, rtol=1e-8, atol=1e-9)
    for sigma in (0.5, 2.0):
        s = torch.full((128,), sigma, dtype=F64)
        x = (x0[:128].double() + sigma * z[:128].double())
        ref = f_exact(x, s)
        with torch.no_grad():
            rmse = [float((d(x.float(), s).double() - ref).pow(2).sum(1).mean().sqrt()) for d in (D0, D)]
        assert rmse[1] < 0.5 * rmse[0], (sigma, rmse)  # measured 0.40 at σ = 0.5, 0.27 at σ = 2
    for steps in (1, 2):
        with torch.no_grad():
            xs = [sample(d, "consistency", (512, 2), steps, seed=1).double() for d in (D0, D)]
        nll = [-float(mix.log_prob_t(x, torch.ones(len(x), dtype=F64), torch.zeros(len(x), dtype=F64)).mean())
               for x in xs]
        radius = xs[1].norm(dim=1)
        assert nll[1] < nll[0] - 10 and bool(torch.isfinite(xs[1]).all())
        assert 1.5 < float(radius.median()) < 2.5, (steps, float(radius.median()))


def test_resume_is_bit_exact_through_the_curriculum(tmp_path):
    """12 steps straight = 6, stop, resume to 12 (N doubles at steps 4 and 8; dropout on)."""
    over = {k.replace(".", "__"): v for k, v in {**CM, "consistency.s0": 2, "consistency.s1": 8}.items()}
    train(tiny(tmp_path / "straight", optim__steps=12, **over), progress=False)
    half = tiny(tmp_path / "halves", optim__steps=12, **over)
    train(half, stop_at=6, progress=False)
    train(None, resume=tmp_path / "halves", progress=False)
    assert same_weights(tmp_path / "straight", tmp_path / "halves")


def test_the_loop_gives_the_objective_its_step():
    cfg = apply_overrides(Config(), {**CM, "data.name": "moons", "optim.steps": 400, "consistency.s0": 4,
                                     "consistency.s1": 32, "optim.batch_size": 64}).validate()
    obj = make_objective_from(cfg, make_path_from(cfg), make_param_from(cfg), bits=None)
    X = torch.randn(100, 2)
    for step, n in ((0, 5), (150, 9), (399, 33)):
        b = draw_batch(cfg, obj, X, None, 0, step, 0, 1)
        levels = obj.times.levels(step)
        assert b.t.shape == (64, 2) and obj.times.n_points(step) == n
        assert bool(torch.isin(b.t[:, 0], levels).all() and torch.isin(b.t[:, 1], levels).all())
        assert torch.equal(b.t, draw_batch(cfg, obj, X, None, 0, step, 0, 1).t)


def test_fresh_ect_and_cd_runs_start_from_the_teacher(tmp_path, monkeypatch):
    """The loop asks kuosan.families.distill.init_from_teacher on every fresh run, never on resume; it copies the
    teacher's weights for cd (and ect), not for ct; a CD run distils a tiny EDM teacher end to end (its loader, its
    Heun step)."""
    import kuosan.train.loop as loop

    calls: list[tuple[str, bool]] = []
    real = loop.init_from_teacher

    def spy(cfg, net):
        calls.append((cfg.consistency.method, real(cfg, net)))
        return calls[-1][1]

    monkeypatch.setattr(loop, "init_from_teacher", spy)
    teacher = tmp_path / "teacher"
    # σ_max 81 > the student's 80 (distill.largest_ve_sigma reads a VE teacher's 80 as 79.99999999999997)
    train(tiny(teacher, optim__steps=20, path__kind="ve", path__sigma_max=81.0, objective__prediction="edm",
               net__dropout=0.0), progress=False)
    cd = tiny(tmp_path / "cd", optim__steps=6, net__dropout=0.0, consistency__method="cd",
              consistency__teacher=str(teacher), consistency__cd_steps=6,
              **{k.replace(".", "__"): v for k, v in CM.items()})
    train(cd, stop_at=3, progress=False)
    train(None, resume=tmp_path / "cd", progress=False)
    train(tiny(tmp_path / "ct", optim__steps=2, **{k.replace(".", "__"): v for k, v in CM.items()}), progress=False)
    # the EDM teacher (its consistency table at the default method), cd, ct
    assert calls == [("ct", False), ("cd", True), ("ct", False)]
    log = (tmp_path / "cd" / "log.csv").read_text().splitlines()
    assert len(log) > 1 and "nan" not in log[-1]


@pytest.mark.slow  # shares the ring run
def test_kuosan_sample_on_a_consistency_run(ring_run, tmp_path, capsys):
    out = str(tmp_path / "x.npz")
    assert main(["sample", str(ring_run), "--out", out, "--quiet", "--n", "8"]) == 0
    assert "consistency on noise levels 80, 0.821: 2 steps, 2 network evaluations" in capsys.readouterr().out
    assert main(["sample", str(ring_run), "--levels", "80,1.5,0.3", "--out", out, "--quiet", "--n", "8"]) == 0
    assert "noise levels 80, 1.5, 0.3: 3 steps" in capsys.readouterr().out
    for args, msg in [
        (["--sampler", "ddim"], "a consistency model gives the ODE endpoint, not E[x_0|x_t]; use --sampler "
                                "consistency"),
        (["--sampler", "heun", "--steps", "2"], "use --sampler consistency"),
        (["--levels", "80,0.8,0.9"], "noise levels must be strictly decreasing"),
        (["--levels", "80,2,2"], "noise levels must be strictly decreasing"),
        (["--levels", "20,0.8"], "the first noise level must be the path's largest, σ = 80"),
        (["--levels", "80,0.8", "--steps", "3"], "--steps 3 disagrees with the 2 noise levels"),
        (["--levels", "80,x"], "--levels must be comma-separated numbers"),
        (["--levels", ","], "at least one noise level"),
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--levels", "80,0.8", "--grid", "karras"], "--levels is the consistency sampler's grid"),
    ]:
        assert main(["sample", str(ring_run), *args, "--out", out, "--quiet"]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("kuosan: error: ") and msg in err and "\n" not in err, (args, err)
