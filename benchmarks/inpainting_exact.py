"""Inpainting against exact conditionals: each method's conditional-mean and covariance errors at 10, 50, 200 steps.

With Gaussian(-mixture) data the denoiser E[x_0|x_t] is exact (kuosan.exact), so what is left is the inpainting
method's own error (and the sampler's). Test beds, both on kuosan's default cosine chain (T = 1000):
- ``gaussian8``: N(0, Σ) with the curves' covariance Σ = 0.25 exp(-(i-j)²/18) + 0.01 I, 8-dim, the first
  half known;
- ``mixture6``: two Gaussians (weights 0.5/0.5, means ±0.8, curve covariance 0.2 exp(-(i-j)²/8) + 0.01 I), 6-dim,
  the first half known (conditionals are two-component mixtures with y-dependent weights).
Known values: --inputs rows drawn from the data (seed 1); every method fills each row --n times (common random
numbers across methods). Errors of the unknown coordinates against the exact conditional (kuosan.exact.inpainting):
mean = RMS over the rows of ‖m̂ - m‖₂; cov = mean over rows of ‖Ĉ - C‖_F/‖C‖_F; "floor" = what an exact
sampler's n samples would show (Gaussian approximation). calls = denoiser calls per sample
(DPS: each with a backward pass).
Run: OMP_NUM_THREADS=1 python benchmarks/inpainting_exact.py [--quick] [--n 1000] [--inputs 4] [--steps 10,50,200]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from kuosan.exact import GaussianMixture, curve_cov, gaussian, inpainting_errors
from kuosan.paths import discrete_vp

METHODS = [("replace", {}), ("repaint", {"resample": 10}), ("dps", {"scale": 0.5}), ("dps", {"scale": 1.0}),
           ("dps", {"scale": 2.0})]
SAMPLERS = [("ddim", {"eta": 1.0}, "ancestral (ddim eta=1)"), ("dpm++2m", {}, "dpm++2m (deterministic)")]


def beds() -> dict[str, tuple[GaussianMixture, torch.Tensor]]:
    g8 = gaussian(torch.zeros(8), curve_cov(8, scale=0.25, length=3.0, jitter=1e-2))
    c6 = curve_cov(6, scale=0.2, length=2.0, jitter=1e-2)
    m6 = GaussianMixture(torch.stack([torch.full((6,), 0.8), torch.full((6,), -0.8)]).double(),
                         torch.stack([c6, c6]), torch.tensor([0.5, 0.5]))
    half = lambda d: torch.tensor([1.0] * (d // 2) + [0.0] * (d - d // 2))  # noqa: E731
    return {"gaussian8": (g8, half(8)), "mixture6": (m6, half(6))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="samples per known row")
    ap.add_argument("--inputs", type=int, default=4, help="known rows per test bed (drawn from the data)")
    ap.add_argument("--steps", default="10,50,200")
    ap.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    args = ap.parse_args()
    steps = [3] if args.quick else [int(s) for s in args.steps.split(",")]
    n, K = (50, 2) if args.quick else (args.n, args.inputs)
    path = discrete_vp("cosine", 1000)
    for name, (mix, mask) in beds().items():
        known = mix.sample(K, generator=torch.Generator().manual_seed(1)).float().double()
        for sampler, opts, label in SAMPLERS:
            print(f"\n{name}, {label}, {K} inputs x {n} samples")
            print(f"{'steps':>5} {'method':<14} {'calls':>6} {'mean err':>9} {'floor':>6} {'cov err':>8} "
                  f"{'floor':>6} {'time s':>7}")
            for st in steps:
                for method, kw in METHODS:
                    t0 = time.perf_counter()
                    errs = inpainting_errors(mix, path, mask, known, method, sampler=sampler, steps=st, n=n,
                                             options=opts, **kw)
                    mean = math.sqrt(sum(e.mean_error**2 for e in errs) / K)
                    floor = math.sqrt(sum(e.mean_floor**2 for e in errs) / K)
                    cov, cfloor = sum(e.cov_error for e in errs) / K, sum(e.cov_floor for e in errs) / K
                    tag = method + "".join(f" {'R' if k == 'resample' else 'ζ'}={v}" for k, v in kw.items())
                    print(f"{st:>5} {tag:<14} {errs[0].nfe:>6} {mean:>9.3f} {floor:>6.3f} {cov:>8.3f} {cfloor:>6.3f} "
                          f"{time.perf_counter() - t0:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
