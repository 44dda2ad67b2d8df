"""Sampler accuracy benchmark: RMSE to the exact PF-ODE endpoint (Song et al. 2021 Eq. (13)) at fixed NFE.

For Gaussian mixtures the denoiser E[x_0|x_t] is exact (kuosan.exact), so the only error left is the
sampler's discretisation error. From one batch x_T ~ N(0, I) at t = T (VP, linear-β schedule, T = 1000) every
deterministic kuosan sampler × grid and, when diffusers is installed, diffusers' schedulers driven by the same
exact denoiser are compared with pf_ode_solve(x_T) at NFE 5, 10, 20, 50. RMSE is per coordinate:
sqrt(mean((x̂ - x_ref)²)). Stochastic samplers (ddpm, sde, pc) do not target the ODE endpoint and are left out.

Optimised grids (kuosan.sampling.tuning.optimise_grid) are fitted on a separate calibration batch, never on the
evaluation batch. Each mixture's role is in its table's title: "tuned" (ring, curves64: settings were chosen on
them), "dev" (looked at while tuning the bespoke fit) and "held out" (first run after the settings were frozen).
The squared error is heavy-tailed (few trajectories that end in another mode carry most of it), hence 4096
evaluation points and a paired bootstrap interval for the kuosan/diffusers ratio in the summary.
diffusers' schedulers get ε̂ = (x - α E[x_0|x])/σ at the (α, σ) their own update uses (alphas_cumprod[τ] for
DDIM, their σ̃ otherwise), i.e. even at Karras σ̃ between integer timesteps: the most favourable reading for
diffusers. The bespoke solver (kuosan.sampling.tuning: times and per-step coefficients fitted by gradient descent) is
fitted on its own calibration batch of --bespoke-n-cal draws (seed 2), separate from the evaluation batch (seed 0),
at the --bespoke-nfe budgets.
Run: python benchmarks/sampler_rmse.py [--quick] [--mixtures ring,curves64] [--n 4096] [--threads 1] [--no-opt]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from kuosan.denoiser import Counting
from kuosan.exact import ExactDenoiser, GaussianMixture, curve_cov, pf_ode_solve, ring
from kuosan.paths import DiscreteVP, discrete_vp
from kuosan.sampling import ddim, dpm_solver_2s, dpmpp, euler, heun, karras_grid, logsnr_grid, ode, uniform_grid, unipc
from kuosan.sampling.tuning import bespoke, optimise_grid, optimise_solver

T = 1000
ONE = lambda n: n
TWO = lambda n: (n + 1) // 2


# --- mixtures ------------------------------------------------------------------------------------------------
def curves(means: list[Tensor], kernels: list[Tensor], weights: list[float]) -> GaussianMixture:
    """A mixture of curve families: mean curves (D,), covariance kernels (D, D), weights."""
    return GaussianMixture(torch.stack(means), torch.stack(kernels), torch.tensor(weights, dtype=torch.float64))


def curves64() -> GaussianMixture:
    """6 families of smooth 64-point curves: sin / ramp / cos / step / tent / fast sin, RBF kernels of varied ℓ."""
    D = 64
    u = torch.linspace(0, 1, D, dtype=torch.float64)
    means = [torch.sin(2 * math.pi * u), 2 * u - 1, torch.cos(3 * math.pi * u), torch.where(u < 0.5, -1.0, 1.0) * 0.9,
             1 - 2 * (2 * u - 1).abs(), 0.7 * torch.sin(4 * math.pi * u)]
    scale_length = [(0.1, 4), (0.05, 8), (0.2, 3), (0.02, 12), (0.1, 6), (0.05, 2)]
    kernels = [curve_cov(D, scale=s, length=l) for s, l in scale_length]
    return curves(means, kernels, [1.0] * 6)


def dev_curves32() -> GaussianMixture:
    """Development (held out until the bespoke fit was tuned on it): 5 families of 32-point curves (bump,
    chirp, square wave, decay, random walk) with
    Ornstein–Uhlenbeck kernels exp(-|i-j|/ℓ) (rough, unlike curve_cov) and unequal weights; seed 20240607."""
    D, g = 32, torch.Generator().manual_seed(20240607)
    u = torch.linspace(0, 1, D, dtype=torch.float64)
    walk = torch.randn(D, generator=g, dtype=torch.float64).cumsum(0) / math.sqrt(D)
    means = [1.2 * torch.exp(-((u - 0.3) ** 2) / 0.01), torch.sin(2 * math.pi * (2 * u + 3 * u**2)),
             torch.sign(torch.sin(6 * math.pi * u)) * 0.8, 1.5 * torch.exp(-4 * u) - 0.5, walk]
    i = torch.arange(D, dtype=torch.float64)
    ou = lambda s, l: s * torch.exp(-(i[:, None] - i[None]).abs() / l) + 1e-3 * torch.eye(D, dtype=torch.float64)
    kernels = [ou(s, l) for s, l in [(0.05, 3.0), (0.02, 1.0), (0.1, 6.0), (0.01, 2.0), (0.04, 10.0)]]
    return curves(means, kernels, [0.3, 0.1, 0.25, 0.2, 0.15])


def aniso2d(k: int, seed: int, std_min: float, std_span: float) -> GaussianMixture:
    """k random anisotropic 2-D Gaussians: means in [-2.5, 2.5]², stds log-uniform in [std_min, std_min·std_span],
    random rotations, Dirichlet(1) weights (normalised Exp(1) draws)."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(k, 2, generator=g, dtype=torch.float64) - 0.5) * 5
    ang = torch.rand(k, generator=g, dtype=torch.float64) * math.pi
    R = torch.stack([torch.stack([ang.cos(), -ang.sin()], 1), torch.stack([ang.sin(), ang.cos()], 1)], 1)  # (k, 2, 2)
    std = std_min * std_span ** torch.rand(k, 2, generator=g, dtype=torch.float64)
    covs = R @ torch.diag_embed(std**2) @ R.transpose(1, 2)
    return GaussianMixture(means, covs, -torch.rand(k, generator=g, dtype=torch.float64).log())


def dev_aniso2d() -> GaussianMixture:
    """Development (tuned on, like dev_curves32): 5 modes, stds 0.02..0.4; seed 7."""
    return aniso2d(5, 7, 0.02, 20)


def heldout_aniso2d() -> GaussianMixture:
    """Held out (written before any run on it, first run once the solver settings were frozen): 6 modes,
    stds 0.03..0.3; seed 2026."""
    return aniso2d(6, 2026, 0.03, 10)


def heldout_curves48() -> GaussianMixture:
    """Held out (like heldout_aniso2d): 4 families of 48-point curves (damped cosine, logistic step, parabola,
    sawtooth) with Matérn-3/2 kernels (1 + r/ℓ)exp(-r/ℓ) of random scale and length, unequal weights; seed 48."""
    D, g = 48, torch.Generator().manual_seed(48)
    u = torch.linspace(0, 1, D, dtype=torch.float64)
    means = [torch.exp(-2 * u) * torch.cos(5 * math.pi * u), torch.tanh(12 * (u - 0.6)), 3 * (u - 0.5) ** 2 * 4 - 1,
             0.8 * (2 * ((3 * u) % 1) - 1)]
    r = (torch.arange(D, dtype=torch.float64)[:, None] - torch.arange(D, dtype=torch.float64)[None]).abs()
    scales = 0.01 * 10 ** torch.rand(4, generator=g, dtype=torch.float64)  # 0.01..0.1
    lengths = 1 + 7 * torch.rand(4, generator=g, dtype=torch.float64)  # 1..8 points
    kernels = [s * (1 + r / l) * torch.exp(-r / l) + 1e-3 * torch.eye(D, dtype=torch.float64)
               for s, l in zip(scales.tolist(), lengths.tolist())]
    return curves(means, kernels, [0.35, 0.3, 0.2, 0.15])


# name -> (factory, role): "tuned" = used to choose settings; "dev" = looked at while tuning the bespoke fit;
# "held out" = first run after the settings were frozen, never used to choose anything
MIXTURES: dict[str, tuple[Callable[[], GaussianMixture], str]] = {
    "ring": (ring, "tuned"), "curves64": (curves64, "tuned"),
    "dev_aniso2d": (dev_aniso2d, "dev"), "dev_curves32": (dev_curves32, "dev"),
    "heldout_aniso2d": (heldout_aniso2d, "held out"), "heldout_curves48": (heldout_curves48, "held out"),
}

# --- kuosan's deterministic samplers: name -> (sampler, NFE budget -> steps) ------------------------------------
KUOSAN: dict[str, tuple[Callable[..., Tensor], Callable[[int], int]]] = {
    "ddim": (ddim, ONE), "euler": (euler, ONE), "heun": (heun, TWO),
    "dpmpp2": (partial(dpmpp, order=2), ONE), "dpmpp3": (partial(dpmpp, order=3), ONE),
    "dpm2s": (dpm_solver_2s, TWO),
    "unipc1": (partial(unipc, order=1), ONE), "unipc2": (partial(unipc, order=2), ONE),
    "unipc3": (partial(unipc, order=3), ONE), "unipc2_bh1": (partial(unipc, order=2, variant="bh1"), ONE),
    "unipc3_bh1": (partial(unipc, order=3, variant="bh1"), ONE),
    "unip3": (partial(unipc, order=3, corrector=False), ONE),
}
QUICK_KUOSAN = ("ddim", "heun", "dpmpp2", "dpmpp3", "unipc2", "unipc3")
GRIDS = ("uniform", "logsnr", "karras")


def fixed_grid(path: DiscreteVP, grid: str, steps: int) -> Tensor:
    if grid == "uniform":
        return uniform_grid(path, steps, "trailing")
    return logsnr_grid(path, steps) if grid == "logsnr" else karras_grid(path, steps)


def rmse(x: Tensor, ref: Tensor) -> float:
    return float((x - ref).pow(2).mean().sqrt())


def cell(x: Tensor, ref: Tensor, nfe: int) -> tuple[float, int, Tensor]:
    """(RMSE, NFE, per-point mean squared error (B,)) of one sampler run."""
    se = (x - ref).double().pow(2).flatten(1).mean(1)
    return float(se.mean().sqrt()), nfe, se


def run_kuosan(fn: Callable[..., Tensor], D: ExactDenoiser, x: Tensor, ts: Tensor) -> tuple[Tensor, int]:
    """Sampler output and its NFE, counted by the Counting wrapper."""
    C = Counting(D)
    return fn(C, x.clone(), ts), C.nfe


# --- diffusers, driven by the exact denoiser ------------------------------------------------------------------
def eps_from_exact(mixture: GaussianMixture, x: Tensor, alpha: float, sigma: float) -> Tensor:
    """What an ideal ε-network outputs for the VP state x (B, D) at (α, σ): ε̂ = (x - α E[x_0|x])/σ."""
    a, s = (torch.full((x.shape[0],), v, dtype=x.dtype) for v in (alpha, sigma))
    return (x - alpha * mixture.denoise(x, a, s)) / sigma


def _diffusers_configs() -> dict[str, tuple[str, str, dict, Callable[[int], int]]]:
    """name -> (scheduler class, form, config, NFE budget -> steps); form says where (α, σ) of a step come from:
    'ab' alphas_cumprod[τ] (DDIM), 'sigma' the scheduler's VE σ̃ of the step (VP multistep),
    've' σ̃ with a VE sample."""
    tr = {"timestep_spacing": "trailing"}  # first timestep 999 (diffusers 0-based) = kuosan t = 1000
    ka = {"use_karras_sigmas": True, "timestep_spacing": "linspace"}
    dpm = {"algorithm_type": "dpmsolver++", "final_sigmas_type": "zero"}
    ex = {"use_exponential_sigmas": True, "timestep_spacing": "linspace"}  # uniform in log σ̃ = kuosan logsnr
    uni = {"final_sigmas_type": "zero"}
    return {
        "ddim": ("DDIMScheduler", "ab", {**tr, "clip_sample": False, "set_alpha_to_one": True}, ONE),
        "dpm2M": ("DPMSolverMultistepScheduler", "sigma", {**tr, **dpm, "solver_order": 2}, ONE),
        "dpm3M": ("DPMSolverMultistepScheduler", "sigma", {**tr, **dpm, "solver_order": 3}, ONE),
        "dpm2M_karras": ("DPMSolverMultistepScheduler", "sigma", {**ka, **dpm, "solver_order": 2}, ONE),
        "dpm3M_karras": ("DPMSolverMultistepScheduler", "sigma", {**ka, **dpm, "solver_order": 3}, ONE),
        "dpm2M_exp": ("DPMSolverMultistepScheduler", "sigma", {**ex, **dpm, "solver_order": 2}, ONE),
        "dpm3M_exp": ("DPMSolverMultistepScheduler", "sigma", {**ex, **dpm, "solver_order": 3}, ONE),
        "unipc2": ("UniPCMultistepScheduler", "sigma", {**tr, **uni, "solver_order": 2}, ONE),
        "unipc3": ("UniPCMultistepScheduler", "sigma", {**tr, **uni, "solver_order": 3}, ONE),
        "unipc2_karras": ("UniPCMultistepScheduler", "sigma", {**ka, **uni, "solver_order": 2}, ONE),
        "unipc3_karras": ("UniPCMultistepScheduler", "sigma", {**ka, **uni, "solver_order": 3}, ONE),
        "unipc2_exp": ("UniPCMultistepScheduler", "sigma", {**ex, **uni, "solver_order": 2}, ONE),
        "unipc3_exp": ("UniPCMultistepScheduler", "sigma", {**ex, **uni, "solver_order": 3}, ONE),
        # DEIS has no final_sigmas_type: it stops at σ̃(τ=0) ≈ 0.01 and returns that state, as in a pipeline
        "deis2": ("DEISMultistepScheduler", "sigma", {**tr, "solver_order": 2}, ONE),
        "deis3": ("DEISMultistepScheduler", "sigma", {**tr, "solver_order": 3}, ONE),
        "heun_karras": ("HeunDiscreteScheduler", "ve", {**ka}, TWO),
    }


QUICK_DIFFUSERS = ("ddim", "dpm2M", "dpm3M_karras", "unipc3", "unipc2_exp", "heun_karras")


def make_scheduler(cls_name: str, config: dict):
    import diffusers

    return getattr(diffusers, cls_name)(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4,
                                        beta_end=0.02, prediction_type="epsilon", **config)


def run_diffusers(name: str, mixture: GaussianMixture, x_T: Tensor, steps: int) -> tuple[Tensor, int]:
    """A diffusers scheduler's loop from the VP state x_T at τ = 999 with the exact ε̂; returns (x_0, NFE)."""
    cls_name, form, config, _ = _diffusers_configs()[name]
    sch = make_scheduler(cls_name, config)
    sch.set_timesteps(steps)
    if hasattr(sch, "set_begin_index"):
        sch.set_begin_index(0)  # step i uses sigmas[i] (rounded Karras timesteps may repeat)
    sample = x_T.clone()
    if form == "ve":  # the same x_T in VP terms: y = x_T/α_T (diffusers' init_noise_sigma is σ̃_max, ~2e-5 off)
        sample = x_T * math.sqrt(1 + float(sch.sigmas[0]) ** 2)
    nfe = 0
    for i, tau in enumerate(sch.timesteps):
        if form == "ab":
            ab = float(sch.alphas_cumprod[int(tau)])
            a, s, x_in = math.sqrt(ab), math.sqrt(1 - ab), sample
        else:
            x_in = sch.scale_model_input(sample, tau) if form == "ve" else sample
            sg = float(sch.sigmas[sch.step_index if form == "ve" else i])  # the σ̃ the scheduler's update uses
            a = 1 / math.sqrt(1 + sg**2)
            s = sg * a
        eps = eps_from_exact(mixture, x_in, a, s)
        nfe += 1
        sample = sch.step(eps, tau, sample).prev_sample
    if form != "ab" and sch.step_index != len(sch.timesteps):
        raise RuntimeError(f"diffusers {name}: step index {sch.step_index} != {len(sch.timesteps)} steps")
    return sample.to(x_T.dtype), nfe


def diffusers_available() -> bool:
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return False
    return True


# --- the benchmark -------------------------------------------------------------------------------------------
ODE_GRID = torch.tensor([float(T), 1.0, 0.0], dtype=torch.float64)  # ode() uses only the ends: T and t_min = 1


def ode_candidates(D: ExactDenoiser, x_cal: Tensor, ref_cal: Tensor) -> list[dict]:
    """Adaptive ODE settings with their calibration NFE and RMSE (the budget picks among them)."""
    out = []
    for method in ("bosh3", "dopri5"):
        for tol in (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4):
            x, nfe = run_kuosan(partial(ode, rtol=tol, atol=tol, method=method), D, x_cal, ODE_GRID)
            out.append({"method": method, "tol": tol, "nfe": nfe, "err": rmse(x, ref_cal)})
    return out


Rows = dict[str, dict[int, tuple[float, int, Tensor]]]  # 'lib:sampler/grid' -> {budget: (RMSE, NFE, per-point SE)}


def bench_mixture(name: str, args: argparse.Namespace, log: Callable[[str], None]) -> Rows:
    """rows 'lib:sampler/grid' -> {NFE budget: (RMSE, NFE used)} for one mixture."""
    mix = MIXTURES[name][0]()
    path = discrete_vp("linear", T)  # Ho et al.'s linear β; pf_ode_solve starts at its σ̃(T)
    D = ExactDenoiser(mix, path)
    x_T = torch.randn(args.n, mix.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x_cal = torch.randn(args.n_cal, mix.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t0 = time.time()
    ref = pf_ode_solve(mix, x_T, path.sigma_max())
    ref_cal = pf_ode_solve(mix, x_cal, path.sigma_max()) if args.opt or args.ode else None
    log(f"[{name}] dim {mix.dim}, {len(mix.weights)} modes, references in {time.time() - t0:.1f}s")
    rows: Rows = {}
    for sname in args.samplers:
        fn, to_steps = KUOSAN[sname]
        opt = args.opt and sname in args.opt_samplers
        grids = list(GRIDS) + (["optimised"] if opt else [])
        for grid in grids:
            row = rows.setdefault(f"kuosan:{sname}/{grid}", {})
            for budget in args.nfe:
                steps = to_steps(budget)
                if grid == "optimised":
                    if budget > args.opt_max_nfe or steps < 2:
                        continue
                    ts = optimise_grid(D, steps, x_cal, sampler=fn, reference=ref_cal,
                                       max_evals=min(args.opt_evals, 150 * (steps - 1)), progress=args.progress)
                else:
                    ts = fixed_grid(path, grid, steps)
                out, nfe = run_kuosan(fn, D, x_T, ts)
                if nfe > budget:
                    raise RuntimeError(f"kuosan {sname}/{grid}: {nfe} NFE exceed the budget {budget}")
                row[budget] = cell(out, ref, nfe)
    if args.bespoke:
        # Own calibration draws (seed 2, never the evaluation batch) with their exact endpoints; the early-stopping
        # slice is part of this calibration batch too.
        x_bc = torch.randn(args.bespoke_n_cal, mix.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        tb = time.time()
        ref_bc = pf_ode_solve(mix, x_bc, path.sigma_max())
        log(f"[{name}] bespoke calibration references ({args.bespoke_n_cal} points) in {time.time() - tb:.1f}s")
        row = rows.setdefault("kuosan:bespoke/optimised", {})
        for budget in args.nfe:
            if budget not in args.bespoke_nfe:
                continue
            # fitted in float32 by default (half the time, same error on the dev mixtures); evaluated in float64
            P = optimise_solver(D, budget, x_bc.to(args.bespoke_dtype), reference=ref_bc.to(args.bespoke_dtype),
                                iters=args.bespoke_iters, progress=args.progress)
            log(f"[{name}] bespoke {budget} NFE optimised in {P.info['seconds']:.1f}s "
                f"(validation RMSE {P.info['start_val_rmse']:.3e} -> {P.info['val_rmse']:.3e})")
            out, nfe = run_kuosan(partial(bespoke, coeffs=P.coeffs()), D, x_T, P.ts)
            row[budget] = cell(out, ref, nfe)
    if args.ode:
        row, cands = rows.setdefault("kuosan:ode/adaptive", {}), ode_candidates(D, x_cal, ref_cal)
        for budget in args.nfe:
            fits = [c for c in cands if c["nfe"] <= budget]
            if fits:  # chosen on the calibration batch; its NFE on the evaluation batch may differ (adaptive)
                c = min(fits, key=lambda c: c["err"])
                out, nfe = run_kuosan(partial(ode, rtol=c["tol"], atol=c["tol"], method=c["method"]), D, x_T, ODE_GRID)
                row[budget] = cell(out, ref, nfe)
    if args.diffusers:
        configs = _diffusers_configs()
        for dname in args.diffusers_samplers:
            row = rows.setdefault(f"diffusers:{dname}", {})
            for budget in args.nfe:
                out, nfe = run_diffusers(dname, mix, x_T, configs[dname][3](budget))
                if nfe > budget:
                    raise RuntimeError(f"diffusers {dname}: {nfe} NFE exceed the budget {budget}")
                row[budget] = cell(out, ref, nfe)
    log(f"[{name}] done in {time.time() - t0:.1f}s")
    return rows


def best_at(rows: Rows, prefix: str, budget: int, exclude: str | None = None) -> tuple[str, float] | None:
    """The row with the smallest RMSE at ``budget`` among those that stayed within it (adaptive ODE may not)."""
    cands = [(k, v[budget][0]) for k, v in rows.items() if k.startswith(prefix) and budget in v
             and v[budget][1] <= budget and (exclude is None or exclude not in k)]
    return min(cands, key=lambda kv: kv[1]) if cands else None


def ratio_interval(se_a: Tensor, se_b: Tensor, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """5th and 95th percentiles of RMSE_a/RMSE_b over paired bootstrap resamples of the evaluation points:
    the squared error is heavy-tailed (a few trajectories that end in another mode carry most of it)."""
    idx = torch.randint(0, se_a.numel(), (draws, se_a.numel()), generator=torch.Generator().manual_seed(seed))
    r = (se_a[idx].mean(1) / se_b[idx].mean(1)).sqrt()
    return float(r.quantile(0.05)), float(r.quantile(0.95))


def report(name: str, rows: Rows, args: argparse.Namespace, log: Callable[[str], None]) -> str:
    """Print the table of one mixture and return its summary line."""
    held = f" ({MIXTURES[name][1]})"
    log(f"\n== {name}{held}: RMSE to the exact PF-ODE endpoint (NFE used in brackets where it differs from the budget)")
    log(f"{'sampler/grid':34s}" + "".join(f"{'NFE ' + str(b):>18s}" for b in args.nfe))
    for key, row in rows.items():
        cells = []
        for b in args.nfe:
            if b not in row:
                cells.append(f"{'-':>18s}")
                continue
            err, nfe, _ = row[b]
            cells.append(f"{err:>12.3e}{'(' + str(nfe) + ')' if nfe != b else '':>6s}")
        log(f"{key:34s}" + "".join(cells))
    b = 10 if 10 in args.nfe else args.nfe[-1]
    k_fixed = best_at(rows, "kuosan:", b, exclude="/optimised")
    k_all = best_at(rows, "kuosan:", b)
    dif = best_at(rows, "diffusers:", b)
    line = f"SUMMARY {name}{held} @ {b} NFE: kuosan best {k_all[1]:.3e} ({k_all[0][7:]})"
    if k_fixed is not None and k_fixed != k_all:
        line += f", fixed-grid best {k_fixed[1]:.3e} ({k_fixed[0][7:]})"
    if dif is None:
        line += "; diffusers not run"
    else:
        ratio = k_all[1] / dif[1]
        lo, hi = ratio_interval(rows[k_all[0]][b][2], rows[dif[0]][b][2])
        line += f"; diffusers best {dif[1]:.3e} ({dif[0][10:]}); ratio {ratio:.3f} (90% bootstrap {lo:.2f}-{hi:.2f})"
        if k_fixed is not None and k_fixed != k_all:
            line += f" (fixed grids {k_fixed[1] / dif[1]:.3f})"
        line += f"; goal <= 1/3 {'MET' if ratio <= 1 / 3 else 'NOT met'}"
    log(line)
    return line


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny: 64 points, NFE 5,10, fewer samplers, no optimisation")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest for these sizes)")
    p.add_argument("--mixtures", default=None, help=f"comma list from {', '.join(MIXTURES)} (default: all)")
    p.add_argument("--n", type=int, default=None, help="evaluation points (default 4096, quick 64)")
    p.add_argument("--n-cal", type=int, default=128, help="calibration points for optimised grids / ODE tolerances")
    p.add_argument("--nfe", default=None, help="comma list of NFE budgets (default 5,10,20,50; quick 5,10)")
    p.add_argument("--no-opt", dest="opt", action="store_false", help="skip optimised grids")
    p.add_argument("--opt-samplers", default="dpmpp2,dpmpp3,unipc2,unipc3",
                   help="samplers that get an optimised grid")
    p.add_argument("--opt-max-nfe", type=int, default=20, help="optimise grids only up to this NFE (cost ~ NFE²)")
    p.add_argument("--opt-evals", type=int, default=400, help="max objective evaluations per optimised grid")
    p.add_argument("--no-bespoke", dest="bespoke", action="store_false", help="skip the bespoke solver")
    p.add_argument("--bespoke-n-cal", type=int, default=16384, help="calibration points for the bespoke solver")
    p.add_argument("--bespoke-nfe", default="5,10", help="budgets (>= 3) that get a bespoke solver")
    p.add_argument("--bespoke-iters", type=int, default=2400, help="Adam iterations of each bespoke fit")
    p.add_argument("--bespoke-fp64", action="store_true", help="fit the bespoke solver in float64 (slower)")
    p.add_argument("--no-ode", dest="ode", action="store_false", help="skip the adaptive ODE sampler")
    p.add_argument("--no-diffusers", dest="diffusers", action="store_false", help="skip diffusers even if installed")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bars (on stderr) for the grid and bespoke fits")
    a = p.parse_args(argv)
    a.n = a.n or (64 if a.quick else 4096)
    a.nfe = [int(v) for v in (a.nfe or ("5,10" if a.quick else "5,10,20,50")).split(",")]
    a.mixtures = (a.mixtures or ("ring,dev_aniso2d" if a.quick else ",".join(MIXTURES))).split(",")
    bad = [m for m in a.mixtures if m not in MIXTURES]
    if bad:
        raise ValueError(f"unknown mixture(s) {', '.join(bad)}; choose from {', '.join(MIXTURES)}")
    a.samplers = list(QUICK_KUOSAN if a.quick else KUOSAN)
    a.opt_samplers = a.opt_samplers.split(",")
    if [v for v in a.opt_samplers if v not in KUOSAN]:
        raise ValueError(f"unknown sampler(s) in --opt-samplers {a.opt_samplers}; choose from {', '.join(KUOSAN)}")
    if a.n < 1 or a.n_cal < 1 or a.bespoke_n_cal < 4 or a.threads < 1 or min(a.nfe) < 1:
        raise ValueError("--n, --n-cal, --threads and every --nfe budget must be positive integers "
                         "(--bespoke-n-cal at least 4)")
    if a.quick:
        a.opt, a.ode, a.bespoke = False, False, False
    a.diffusers = a.diffusers and diffusers_available()
    a.bespoke_dtype = torch.float64 if a.bespoke_fp64 else torch.float32
    a.bespoke_nfe = [int(v) for v in a.bespoke_nfe.split(",")]
    if min(a.bespoke_nfe) < 3:
        raise ValueError("--bespoke-nfe budgets must be at least 3 (the bespoke solver's minimum)")
    a.diffusers_samplers = list(QUICK_DIFFUSERS if a.quick else _diffusers_configs())
    return a


def main(argv: list[str] | None = None) -> list[str]:
    """Run the benchmark; prints the tables and returns the summary lines."""
    args = parse(argv)
    torch.set_num_threads(args.threads)
    log = partial(print, flush=True)
    if not args.diffusers:
        log("diffusers not installed (or --no-diffusers): kuosan samplers only")
    summaries = [report(m, bench_mixture(m, args, log), args, log) for m in args.mixtures]
    log("")
    for line in summaries:
        log(line)
    return summaries


if __name__ == "__main__":
    main()
