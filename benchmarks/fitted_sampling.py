"""Model-fitted sampling on a trained network: FD at 3-6 NFE of fixed, optimised and bespoke grids (issue 13).

For each NFE, n samples from the same x_T (same seed) by UniPC and DPM-Solver++(2M) on the uniform (trailing),
logSNR and Karras grids, on the grid optimised for the model (kuosan.sampling.tuning.grid_for) and by the bespoke
solver (bespoke_params); FD is computed as ``kuosan eval`` computes it (kuosan.metrics feature_extractor on the
run's training split, frechet_distance of the samples' features against the training features) and divided by
the FD of a many-step reference (``--ref``: 1000-step DDIM by default, or 100-step UniPC when that is too
slow). The fits are timed on their first call (they are then cached in the work copy's checkpoint folder, as
``kuosan sample --grid optimised`` caches them) and set against the time of one 10-step fixed-grid UniPC sample
of the calibration batch in the same process (the machine may be shared: the ratio is the portable figure).

    kuosan train --out runs/digits-default && python benchmarks/fitted_sampling.py --run runs/digits-default
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from kuosan.build import load_denoiser
from kuosan.checkpoint import resolve
from kuosan.data import load_dataset, split
from kuosan.metrics import FeatureConfig, feature_extractor, frechet_distance
from kuosan.sampling import make_grid, sample
from kuosan.sampling.tuning import GRID_CALIB_N, bespoke_params, grid_for

FIXED = ("uniform", "logsnr", "karras")
REFS = {"ddim1000": ("ddim", 1000, "uniform"), "unipc100": ("unipc", 100, "logsnr")}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a trained run (copied to --work; never written to)")
    p.add_argument("--work", help="work folder for the copy (default: a new temporary folder)")
    p.add_argument("--nfe", default="3,4,5,6", help="comma-separated NFE budgets")
    p.add_argument("--samplers", default="unipc,dpm++2m", help="fixed-grid samplers")
    p.add_argument("--optimise", default="unipc,dpm++2m", help="samplers whose grid is optimised ('' for none)")
    p.add_argument("--no-bespoke", action="store_true")
    p.add_argument("--ref", default="ddim1000", choices=sorted(REFS),
                   help="the many-step reference whose FD the table divides by (ddim1000: the 1000-step FD issue 13 "
                        "names; about 2.5 minutes for n = 1000 digits on 2 cores)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-seconds", type=float, help="time bound of each fit (default: the library's)")
    p.add_argument("--feature-steps", type=int, default=FeatureConfig.steps, help="feature network's Adam steps")
    p.add_argument("--json", help="write the rows here")
    a = p.parse_args(argv)
    try:
        a.nfe = [int(s) for s in a.nfe.split(",") if s]
    except ValueError:
        p.error(f"--nfe must be comma-separated integers, got {a.nfe!r}")
    if not a.nfe or min(a.nfe) < 1 or a.n < 2:
        p.error("--nfe needs positive integers and --n at least 2")
    a.samplers = [s for s in a.samplers.split(",") if s]
    a.optimise = [s for s in a.optimise.split(",") if s]
    return a


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    a = parse(argv)
    torch.set_num_threads(torch.get_num_threads())
    work = Path(a.work or tempfile.mkdtemp(prefix="kuosan-fitted-"))
    run = work / "run"
    if not run.exists():
        shutil.copytree(a.run, run)
    ckpt = resolve(str(run))
    D, meta, cfg = load_denoiser(ckpt, use_ema=True, device="cpu")
    shape = (a.n, *meta["shape"])
    ds = load_dataset(cfg.data.name, n=cfg.data.n, seed=cfg.run.seed)
    tr, _ = split(ds, cfg.data.val_fraction, cfg.run.seed)
    feats = feature_extractor(tr.x, tr.y, tr.num_classes, FeatureConfig(steps=a.feature_steps))
    bound = {} if a.fit_seconds is None else {"seconds": a.fit_seconds}
    f_train = feats.features(tr.x)

    def fd(x: torch.Tensor) -> float:
        return frechet_distance(f_train, feats.features(x), n_boot=0).value

    def draw(sampler: str, steps: int, ts: torch.Tensor, **opts: Any) -> torch.Tensor:
        return sample(D, sampler, shape, steps, seed=a.seed, ts=ts, **opts)

    t = time.perf_counter()  # the in-process yardstick of the fit times
    sample(D, "unipc", (GRID_CALIB_N, *meta["shape"]), 10, seed=a.seed, ts=make_grid(D.path, 10, "uniform"))
    t10 = time.perf_counter() - t
    name, steps, kind = REFS[a.ref]
    t = time.perf_counter()
    fd_ref = fd(draw(name, steps, make_grid(D.path, steps, kind)))
    print(f"reference {a.ref}: FD {fd_ref:.4f} ({time.perf_counter() - t:.0f} s); 10-step UniPC sample of "
          f"{GRID_CALIB_N}: {t10:.2f} s", flush=True)
    rows: list[dict[str, Any]] = []

    def add(nfe: int, label: str, x: torch.Tensor, fit_s: float | None = None) -> None:
        v = fd(x)
        rows.append({"nfe": nfe, "method": label, "fd": v, "ratio": v / fd_ref, "fit_s": fit_s,
                     "fit_ratio": None if fit_s is None else fit_s / t10})
        fit = "" if fit_s is None else f"  fit {fit_s:.1f} s = {fit_s / t10:.1f}x"
        print(f"NFE {nfe}  {label:22s} FD {v:.4f}  {v / fd_ref:.2f}x ref{fit}", flush=True)

    for nfe in a.nfe:
        for s in a.samplers:
            for g in FIXED:
                add(nfe, f"{s} {g}", draw(s, nfe, make_grid(D.path, nfe, g)))
        for s in a.optimise:
            t = time.perf_counter()
            ts = grid_for(D, s, nfe, ckpt / "grids", seed=a.seed, shape=shape, progress=False, **bound)
            fit_s = time.perf_counter() - t
            add(nfe, f"{s} optimised", draw(s, nfe, ts), fit_s)
        if not a.no_bespoke and nfe >= 3:
            t = time.perf_counter()
            ts, co = bespoke_params(D, nfe, ckpt / "grids", seed=a.seed, shape=shape, progress=False, **bound)
            fit_s = time.perf_counter() - t
            add(nfe, "bespoke", draw("bespoke", nfe, ts, coeffs=co), fit_s)
    print(f"\nFD of n = {a.n} samples / FD of the reference {a.ref} ({fd_ref:.4f}); fits in s (x a 10-step "
          f"sample of {GRID_CALIB_N} = {t10:.2f} s)")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    print(f"{'method':22s} " + " ".join(f"{'NFE ' + str(n):>14s}" for n in a.nfe))
    for m in methods:
        cells = []
        for n in a.nfe:
            r = next((r for r in rows if r["method"] == m and r["nfe"] == n), None)
            fit = "" if r is None or r["fit_s"] is None else f" ({r['fit_s']:.0f}s)"
            cells.append(f"{'-' if r is None else format(r['ratio'], '.2f') + fit:>14s}")
        print(f"{m:22s} " + " ".join(cells))
    if a.json:
        Path(a.json).write_text(json.dumps({"ref": a.ref, "fd_ref": fd_ref, "t10": t10, "rows": rows}, indent=1))
    return rows


if __name__ == "__main__":
    main()
