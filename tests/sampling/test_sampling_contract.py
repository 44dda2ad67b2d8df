"""The sampler contract, for every registered sampler × every path kind it supports (and a PathError for the ones it
refuses): shape and dtype kept, same seed -> bitwise-same samples, results independent of the batch size and of
how indices are split over processes (stochastic samplers included), ``cond`` reaches the denoiser, the callback
fires once per step, declared NFE = counted NFE, unknown options refused, outputs finite.

Runs on the exact denoiser of a small 2-D mixture; the zero-terminal-SNR chain uses a v-prediction denoiser (the
exact x̂_0 sent through v = α ε̂ - σ x̂_0 and back), which stays defined at α = 0 where ε-prediction is not."""

from __future__ import annotations

import re

import pytest
import torch

from kuosan.denoiser import Counting
from kuosan.exact import ExactDenoiser, GaussianMixture
from kuosan.parameterisation import V
from kuosan.paths import PathError, discrete_vp, make_path
from kuosan.sampling import SAMPLERS, NoiseSource, NonFiniteSamplesError, make_grid, sample

MIX = GaussianMixture(torch.tensor([[-1.5, 0.0], [1.0, 1.2], [1.0, -1.2]]),
                      torch.tensor([[[0.20, 0.05], [0.05, 0.10]], [[0.10, 0.0], [0.0, 0.15]],
                                    [[0.15, -0.03], [-0.03, 0.10]]]),
                      torch.tensor([0.5, 0.3, 0.2]))


class VDenoiser:
    """The exact denoiser read through v-prediction (Salimans & Ho 2022): a round trip x̂_0 -> v̂ -> x̂_0."""

    def __init__(self, mixture: GaussianMixture, path):
        self.exact, self.path = ExactDenoiser(mixture, path), path

    def __call__(self, x_t, t, **cond):
        from kuosan.broadcast import batch_times, expand

        t = batch_times(t, x_t)
        x0 = self.exact(x_t, t)
        a, s = expand(self.path.alpha(t), x_t), expand(self.path.sigma(t), x_t)
        v = a * (x_t - a * x0) / s - s * x0  # α ε̂ - σ x̂_0 (σ > 0 at every time a sampler evaluates)
        return V().to_x0(v, x_t, self.path, t)


PATHS = {
    "linear": lambda: ExactDenoiser(MIX, discrete_vp("linear", 1000)),
    "cosine": lambda: ExactDenoiser(MIX, discrete_vp("cosine", 1000)),  # the default training schedule
    "ztsnr": lambda: VDenoiser(MIX, discrete_vp("linear", 1000, zero_terminal_snr=True)),
    "vp_cosine": lambda: ExactDenoiser(MIX, make_path("vp_cosine")),
    "ve": lambda: ExactDenoiser(MIX, make_path("ve")),
    "flow": lambda: ExactDenoiser(MIX, make_path("flow")),
}
FAST = {"ode": {"rtol": 1e-3, "atol": 1e-3}}  # the contract does not need accuracy: fewer evaluations
CASES = [(name, FAST.get(name, {})) for name in SAMPLERS] + [("ddim", {"eta": 0.5}),
                                                             ("pc", {"predictor": "euler_maruyama"})]
IDS = [name + "".join(f"-{k}={v}" for k, v in opts.items()) for name, opts in CASES]
STEPS = 5
GRIDS = ["uniform", "logsnr"]  # trailing starts at t_max (α = 0 on three of the paths); logsnr too


def _combos(supported_only: bool = False):
    for (name, opts), cid in zip(CASES, IDS):
        for pk, make in PATHS.items():
            if not supported_only or SAMPLERS[name].supports(make().path) is None:
                yield pytest.param(name, opts, pk, id=f"{cid}-{pk}")


def _setup(name, pk):
    D = PATHS[pk]()
    reason = SAMPLERS[name].supports(D.path)
    return D, reason


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("name, opts, pk", list(_combos()))
def test_runs_with_declared_nfe_callbacks_shape_and_dtype(name, opts, pk, grid):
    D, reason = _setup(name, pk)
    spec = SAMPLERS[name]
    ts = make_grid(D.path, STEPS, grid)
    if reason is not None:
        with pytest.raises(PathError):
            spec.fn(D, torch.zeros(3, 2), ts, **opts)
        with pytest.raises(PathError, match=name):
            sample(D, name, (3, 2), STEPS, grid=grid, **opts)
        return
    for dtype in (torch.float32, torch.float64):
        noise = NoiseSource(0, 0, 6)
        x = D.path.prior_std * noise(torch.empty(6, 2, dtype=dtype))
        C, seen = Counting(D), []
        out = spec.fn(C, x, ts, noise=noise, callback=lambda i, xi, x0: seen.append((i, xi.shape, x0.shape)), **opts)
        assert out.shape == x.shape and out.dtype == dtype
        assert bool(torch.isfinite(out).all())
        assert [s[0] for s in seen] == list(range(STEPS)), "callback must fire once per step, in order"
        assert all(s[1] == x.shape and s[2] == x.shape for s in seen)
        declared = spec.nfe(STEPS, D.path, **opts)
        if declared is None:  # adaptive: at least one evaluation per step
            assert C.nfe >= STEPS
        else:
            assert C.nfe == declared, f"{name} on {pk}: declared {declared}, counted {C.nfe}"


@pytest.mark.parametrize("name, opts, pk", list(_combos(supported_only=True)))
def test_seeded_and_independent_of_batching(name, opts, pk):
    D = PATHS[pk]()
    kw = dict(grid="logsnr", dtype=torch.float64, **opts)
    stats: dict = {}
    full = sample(D, name, (7, 2), STEPS, seed=11, batch_size=7, stats=stats, **kw)
    assert full.dtype == torch.float64 and full.shape == (7, 2) and bool(torch.isfinite(full).all())
    assert torch.equal(full, sample(D, name, (7, 2), STEPS, seed=11, batch_size=7, **kw)), "same seed, same samples"
    assert not torch.equal(full, sample(D, name, (7, 2), STEPS, seed=12, batch_size=7, **kw))
    for bs in (1, 3):
        assert torch.equal(full, sample(D, name, (7, 2), STEPS, seed=11, batch_size=bs, **kw)), f"batch_size {bs}"
    # two "processes" drawing disjoint index ranges give the same samples as one
    part = [sample(D, name, (3, 2), STEPS, seed=11, batch_size=2, **kw),
            sample(D, name, (4, 2), STEPS, seed=11, batch_size=4, first_index=3, **kw)]
    assert torch.equal(full, torch.cat(part))
    declared = SAMPLERS[name].nfe(STEPS, D.path, **opts)
    assert stats["nfe"] == declared if declared is not None else stats["nfe"] >= STEPS
    assert stats["nfe_per_batch"] == [stats["nfe"]] and len(stats["grid"]) == STEPS + 1


class CondProbe:
    """A denoiser that needs a per-sample ``shift`` (B,) and adds it to x̂_0; records the rows it saw."""

    def __init__(self, inner):
        self.inner, self.path, self.seen = inner, inner.path, []

    def __call__(self, x_t, t, *, shift):
        assert shift.shape == (x_t.shape[0],), "cond must be sliced with the batch"
        self.seen.append(shift.clone())
        return self.inner(x_t, t) + 0.1 * shift[:, None].to(x_t)


@pytest.mark.parametrize("name, opts, pk", list(_combos(supported_only=True)))
def test_cond_reaches_the_denoiser(name, opts, pk):
    D = PATHS[pk]()
    probe = CondProbe(D)
    shift = torch.arange(5, dtype=torch.float64)
    a = sample(probe, name, (5, 2), 3, seed=1, batch_size=2, grid="logsnr", dtype=torch.float64,
               cond={"shift": shift}, **opts)
    assert probe.seen and set(torch.cat(probe.seen).tolist()) == set(shift.tolist())
    b = sample(probe, name, (5, 2), 3, seed=1, batch_size=2, grid="logsnr", dtype=torch.float64,
               cond={"shift": torch.zeros(5, dtype=torch.float64)}, **opts)
    assert not torch.equal(a, b), "the conditioning must change the samples"
    with pytest.raises(ValueError, match="one row per sample"):
        sample(probe, name, (5, 2), 3, cond={"shift": shift[:4]}, **opts)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_unknown_and_foreign_options_are_refused(name):
    D = PATHS["linear"]()
    with pytest.raises(ValueError, match=re.escape(f"sampler '{name}' does not take option 'bogus'")):
        sample(D, name, (2, 2), 3, bogus=1)
    foreign = next(o for o in ("eta", "snr", "rtol", "r") if o not in SAMPLERS[name].options)
    with pytest.raises(ValueError, match=re.escape(f"'{name}' does not take option '{foreign}'")):
        sample(D, name, (2, 2), 3, **{foreign: 0.5})
    sample(D, name, (2, 2), 3, **{foreign: None})  # None means "not given"


def test_sample_arguments_and_messages():
    D = PATHS["linear"]()
    with pytest.raises(ValueError, match="unknown sampler 'euler_a'"):
        sample(D, "euler_a", (8, 2), 20)
    for bad in ({"seed": -1}, {"seed": 1.5}, {"first_index": -2}, {"batch_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            sample(D, "ddim", (4, 2), 5, **bad)
    with pytest.raises(ValueError, match="shape"):
        sample(D, "ddim", (0, 2), 5)
    with pytest.raises(ValueError, match="steps = 5 needs 6"):
        sample(D, "ddim", (4, 2), 5, ts=make_grid(D.path, 4))
    with pytest.raises(ValueError, match="eta"):
        sample(D, "ddim", (4, 2), 5, eta=-1.0)
    with pytest.raises(ValueError, match="clip"):
        sample(D, "ddim", (4, 2), 5, clip=float("nan"))


def test_non_finite_output_is_an_error():
    class Broken:
        path = discrete_vp("linear", 1000)

        def __call__(self, x_t, t, **cond):
            out = torch.zeros_like(x_t)
            out[1] = float("nan")
            return out

    with pytest.raises(NonFiniteSamplesError, match=r"non-finite values in 1 of 3 samples.*sample 4"):
        sample(Broken(), "ddim", (3, 2), 4, first_index=3)


def test_one_progress_bar_over_all_batches(monkeypatch):
    import tqdm.auto

    bars = []

    class Bar:
        def __init__(self, total=None, **kw):
            self.total, self.n = total, 0
            bars.append(self)

        def update(self, k=1):
            self.n += k

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    for name in ("ddim", "ode", "pc"):
        bars.clear()
        sample(PATHS["cosine"](), name, (10, 2), 4, batch_size=3, progress=True)
        assert len(bars) == 1 and bars[0].total == 16 and bars[0].n == 16, name


def test_noise_source_streams_are_per_sample():
    like = torch.empty(5, 3, dtype=torch.float64)
    a, b = NoiseSource(7, 0, 5), NoiseSource(7, 2, 3)
    za, zb = a(like), b(like[:3])
    assert torch.equal(za[2:], zb)  # row i depends on (seed, index) only
    assert torch.equal(a(like)[2:], b(like[:3]))  # and so does every later draw
    assert not torch.equal(NoiseSource(8, 0, 5)(like), NoiseSource(7, 0, 5)(like))
    assert abs(float(NoiseSource(0, 0, 2000)(torch.empty(2000, 50)).std()) - 1) < 0.01
    with pytest.raises(ValueError, match="rows"):
        a(torch.empty(4, 3))
    with pytest.raises(ValueError, match="seed"):
        NoiseSource(-1, 0, 2)
