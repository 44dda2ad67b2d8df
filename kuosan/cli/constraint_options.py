"""``kuosan sample`` options for constrained sampling and inpainting (kuosan.constraints), and the checks and file
reading behind them: every bad input is one line (UsageError / ConstraintError, exit code 2) before sampling.

--constraint box:LO,HI | linear:FILE (.npz with A (k, d) or (k, *D), b (k,)); --mask FILE --known FILE (.png, .npy
or .npz; the mask is binary, 1 = known, of the data's shape, (H, W) or (1, H, W) for images, or K such rows; the known
values likewise, in the data's units: images in [-1, 1], a PNG as its pixels); --inpaint replace|repaint|dps;
--resample R (repaint); --dps-scale Z (dps); --project-x0 (also project every x̂_0). Sample i uses input row i mod K.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from .common import UsageError, nonneg_float, positive_int

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def constraint_spec(s: str) -> tuple[str, Any]:
    """--constraint: ('box', (lo, hi)) or ('linear', path)."""
    kind, _, rest = s.partition(":")
    if kind == "box":
        try:
            lo, hi = (float(v) for v in rest.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be box:LO,HI with two numbers, got {s!r}") from None
        return "box", (lo, hi)
    if kind == "linear" and rest:
        return "linear", rest
    raise argparse.ArgumentTypeError(f"must be box:LO,HI or linear:FILE (an .npz with A and b), got {s!r}")


def add_constraint_options(p: Any) -> None:
    from ..constraints import DEFAULT_DPS_SCALE, DEFAULT_RESAMPLE, INPAINT_METHODS

    g = p.add_argument_group("constraints and inpainting (kuosan.constraints)")
    g.add_argument("--constraint", type=constraint_spec, default=None, metavar="box:LO,HI|linear:FILE",
                   help="keep samples in a box or on A x = b (FILE: .npz with A (k, d) and b (k,)): projected after "
                        "every step and exactly at the end")
    g.add_argument("--mask", default=None, metavar="FILE",
                   help="binary mask (.png, .npy, .npz; 1 = known) of the values given by --known")
    g.add_argument("--known", default=None, metavar="FILE", help="the known values (.png, .npy, .npz), data units")
    g.add_argument("--inpaint", default=None, choices=INPAINT_METHODS, metavar="{" + "|".join(INPAINT_METHODS) + "}",
                   help="how to fill the unknown values (default with --mask: replace)")
    g.add_argument("--resample", type=positive_int, default=None, metavar="R",
                   help=f"--inpaint repaint: passes per step (Lugmayr et al. 2022; default {DEFAULT_RESAMPLE})")
    g.add_argument("--dps-scale", type=nonneg_float, default=None, metavar="Z",
                   help=f"--inpaint dps: gradient-guidance scale ζ >= 0 (default {DEFAULT_DPS_SCALE})")
    g.add_argument("--project-x0", action="store_true", help="also project every x̂_0 the sampler sees onto C")


def check_constraint_options(args: argparse.Namespace, sampler: str) -> None:
    """Flags that do not go together, refused before any work."""
    if (args.mask is None) != (args.known is None):
        raise UsageError("--mask and --known go together (the mask says which values --known gives)")
    if args.inpaint is not None and args.mask is None:
        raise UsageError(f"--inpaint {args.inpaint} needs --mask and --known")
    method = args.inpaint or ("replace" if args.mask is not None else None)
    if args.resample is not None and method != "repaint":
        raise UsageError("--resample applies only with --inpaint repaint")
    if args.dps_scale is not None and method != "dps":
        raise UsageError("--dps-scale applies only with --inpaint dps")
    if args.project_x0 and args.constraint is None and args.mask is None:
        raise UsageError("--project-x0 applies only with --constraint or --mask/--known")
    hooked = args.constraint is not None or method in ("replace", "repaint")
    if sampler == "ode" and hooked:
        raise UsageError("--sampler ode cannot project after each step (its steps are adaptive): use a fixed-step "
                         "sampler, or --inpaint dps without --constraint")


def _read(path: str, what: str) -> np.ndarray:
    """An array from .npy, .npz (array 'x', else the only one) or an image file (uint8 (H, W) or (H, W, 3))."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} {path!r} is not a file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False)
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "x" in z.files or len(z.files) == 1:
                    return z["x" if "x" in z.files else z.files[0]]
                raise UsageError(f"{what} {path!r} holds {', '.join(z.files)}: name the array 'x'")
        if suffix in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(p) as im:
                return np.asarray(im.convert("L" if im.mode in ("1", "L", "LA", "I", "I;16") else "RGB"))
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"cannot read {what} {path!r}: {' '.join(str(e).split())}") from None
    raise UsageError(f"{what} {path!r}: expected .png, .npy or .npz")


def _rows(a: np.ndarray, shape: tuple[int, ...], what: str, image_file: bool) -> Tensor:
    """(K, *shape) float64 from a (*shape), (K, *shape) or, for images, (H, W), (1, H, W), (K, 1, H, W) array (a
    single channel is repeated); an image file's (H, W, 3) is channels-last."""
    if image_file and a.ndim == 3:
        a = a.transpose(2, 0, 1)
    t = torch.from_numpy(np.ascontiguousarray(a)).to(torch.float64)
    if len(shape) == 3:
        C, H, W = shape
        if t.ndim == 2:
            t = t[None]
        if t.ndim == 3:
            t = t[None]
        if t.ndim == 4 and t.shape[2:] == (H, W) and t.shape[1] in (1, C):
            return t.expand(t.shape[0], C, H, W).contiguous()
    elif tuple(t.shape[-len(shape):]) == shape and t.ndim in (len(shape), len(shape) + 1):
        return t.reshape(-1, *shape)
    want = f"(C, H, W) = {shape}, (H, W), (1, H, W) or (K, C, H, W)" if len(shape) == 3 else f"{shape} or (K, *{shape})"
    raise UsageError(f"{what} has shape {tuple(a.shape)}; the data's samples need {want}")


def load_mask_known(mask_file: str, known_file: str, shape: tuple[int, ...], kind: str) -> tuple[Tensor, Tensor]:
    """(mask, known) as (K, *shape) float64 tables, checked: binary mask, finite known values, images in [-1, 1]."""
    raw = _read(mask_file, "--mask")
    is_img = Path(mask_file).suffix.lower() in IMAGE_SUFFIXES
    on, word = (255, "pixels are neither black nor white") if is_img else (1, "values are neither 0 nor 1")
    if raw.dtype.kind not in "biuf":
        raise UsageError(f"--mask {mask_file!r} has unsupported dtype {raw.dtype}")
    bad = int(((raw != 0) & (raw != on)).sum())
    if bad:
        raise UsageError(f"--mask {mask_file!r} is not binary: {bad} {word} (1/white = known, 0/black = unknown)")
    mask = _rows((raw == on).astype(np.float64), shape, "--mask", is_img)
    raw = _read(known_file, "--known")
    is_img = Path(known_file).suffix.lower() in IMAGE_SUFFIXES
    if raw.dtype.kind not in "biuf":
        raise UsageError(f"--known {known_file!r} has unsupported dtype {raw.dtype}")
    if raw.dtype == np.uint8 and kind == "image":
        raw = raw.astype(np.float64) / 127.5 - 1  # pixels -> the data's [-1, 1]
    known = _rows(raw, shape, "--known", is_img)
    if mask.shape[0] != known.shape[0] and 1 not in (mask.shape[0], known.shape[0]):
        raise UsageError(f"--mask has {mask.shape[0]} rows and --known {known.shape[0]}: give equally many, or one")
    K = max(mask.shape[0], known.shape[0])
    mask, known = mask.expand(K, *shape), known.expand(K, *shape)
    vals = known[mask == 1]
    if not bool(torch.isfinite(vals).all()):
        raise UsageError(f"--known {known_file!r} has NaN or infinite values where the mask is 1")
    if kind == "image" and vals.numel() and (float(vals.min()) < -1 - 1e-6 or float(vals.max()) > 1 + 1e-6):
        raise UsageError(f"--known {known_file!r} has values in [{float(vals.min()):.4g}, {float(vals.max()):.4g}] "
                         "outside the data range [-1, 1] of image data")
    if not bool((mask == 0).any()):
        raise UsageError("--mask marks every value known: nothing to fill")
    return mask.contiguous(), torch.where(mask == 1, known, torch.zeros_like(known)).contiguous()


def load_linear(path: str, d: int) -> tuple[Tensor, Tensor]:
    """(A, b) from an .npz (A (k, d) or (k, *D), b (k,))."""
    p = Path(path)
    if p.suffix.lower() != ".npz" or not p.is_file():
        raise UsageError(f"--constraint linear:{path}: expected an existing .npz file with arrays A and b")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "A" not in z.files or "b" not in z.files:
                raise UsageError(f"--constraint linear:{path} holds {', '.join(z.files) or 'nothing'}; needs A and b")
            A, b = z["A"], z["b"]
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"cannot read --constraint linear:{path}: {' '.join(str(e).split())}") from None
    if A.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
        raise UsageError(f"--constraint linear:{path}: A and b must be numeric arrays")
    A = torch.from_numpy(np.ascontiguousarray(A, dtype=np.float64))
    return A.reshape(A.shape[0], -1) if A.ndim > 1 else A.reshape(1, -1), torch.from_numpy(np.asarray(b, np.float64))


@dataclass
class Constrained:
    """What ``kuosan sample`` gives the sampler and does with its output (all pass-through without constraints)."""

    denoiser: Any
    callback: Callable[[int, Tensor, Tensor], Tensor | None] | None = None
    cond: dict[str, Tensor] = field(default_factory=dict)
    finish: Callable[[Tensor], Tensor] = lambda x: x
    note: Callable[[Tensor], str] | None = None  # one line about the result (method, largest violation)
    save: Callable[[Tensor, Path], None] | None = None  # the inpainting picture; None: save the samples as usual


def apply_constraints(args: argparse.Namespace, D: Any, meta: dict[str, Any], shape: tuple[int, ...], ts: Tensor,
                      *, seed: int = 0, first_index: int = 0) -> Constrained:
    """The constrained denoiser, step hook, cond, final projection and picture for ``args`` (shape: (n, *D))."""
    from ..constraints import DEFAULT_RESAMPLE, constrained, inpainting, make_constraint
    from ..constraints.figure import inpainting_figure
    from .common import write_atomic

    n, dims = shape[0], tuple(shape[1:])
    if args.constraint is None and args.mask is None:
        return Constrained(D)
    box = A = b = None
    if args.constraint is not None:
        kind, value = args.constraint
        box, (A, b) = (value, (None, None)) if kind == "box" else (None, load_linear(value, int(np.prod(dims))))
    rows = torch.arange(first_index, first_index + n)
    if args.mask is None:
        plan = constrained(D, make_constraint(dims, box=box, A=A, b=b), ts, seed=seed, project_x0=args.project_x0)
        what, save = f"constraint {args.constraint[0]}", None
    else:
        mask, known = load_mask_known(args.mask, args.known, dims, meta.get("kind", "vector"))
        method = args.inpaint or "replace"
        plan = inpainting(D, ts, dims, mask, known, method, resample=args.resample, scale=args.dps_scale, box=box,
                          A=A, b=b, project_x0=args.project_x0, seed=seed)
        what = f"inpainting ({method})"
        if method == "repaint":  # the hook's re-steps: not in the sampler's evaluation count
            r = args.resample or DEFAULT_RESAMPLE
            what += f", {(r - 1) * (len(ts) - 2)} of the evaluations per sample are its re-steps"
        elif method == "dps":
            what += ", each evaluation with a backward pass"

        def save(x: Tensor, out: Path) -> None:
            if out.suffix.lower() == ".npz":
                write_atomic(out, lambda tmp: np.savez(tmp, x=x.numpy(), mask=mask.numpy(), known=known.numpy()))
            else:
                write_atomic(out, lambda tmp: inpainting_figure(x, mask, known, tmp, first_index))

    def note(x: Tensor) -> str:
        return f"{what}: largest distance from the constraint set {float(plan.constraint.violation(x, rows).max()):.2e}"

    return Constrained(plan.denoiser, plan.callback, plan.cond(n, first_index), lambda x: plan.finish(x, rows), note,
                       save)
