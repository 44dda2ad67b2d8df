"""Convex constraint sets C on x_0 and their Euclidean projections Π_C (Christopher et al. 2024).

Three kinds, combined by intersection:
- a box lo <= x <= hi on every coordinate: Π = clamp;
- fixed values x_M = y_M on a binary mask M (1 = known), given as a table of K rows (mask and known values); sample
  i uses row i mod K (``rows`` are sample indices);
- a linear equality A x = b on the flattened sample (A (k, d), d = numel of one sample).
Fixed values and A x = b together are one affine set, projected exactly: set x_M = y_M, then project the free
coordinates F onto A_F x_F = b - A_M y_M, x_F <- x_F - A_F⁺ (A_F x_F - b'), with the pseudo-inverse of A_F computed
once per mask row (the distance splits over coordinates, so this is the projection onto the intersection). Box and
fixed values: clamp, then fix (both act coordinatewise and the fixed values lie in the box). Box and A x = b
together would need an iterative projection (Dykstra's) and are refused.

``scale`` projects onto s·C = {x: x_M = s y_M, A x = s b} (the affine part; the step hook uses s = α_t). Affine
projections run in float64 and return the input's dtype; ``violation`` is the largest per-sample distance from C
(box: coordinate excess; fixed: |x_M - y_M|; linear: |a_i x - b_i|/‖a_i‖, the distance to each hyperplane).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


class ConstraintError(ValueError):
    """An empty (infeasible) or malformed constraint; the message says which and why."""


@dataclass(frozen=True)
class Box:
    """lo <= x <= hi on every coordinate."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            raise ConstraintError(f"box bounds must be finite numbers, got [{self.lo}, {self.hi}]")
        if self.lo > self.hi:
            raise ConstraintError(f"the box is empty: LO = {self.lo:g} > HI = {self.hi:g}")

    def project(self, x: Tensor) -> Tensor:
        return x.clamp(self.lo, self.hi)

    def violation(self, x: Tensor) -> Tensor:
        """(B,) largest coordinate excess."""
        f = x.reshape(x.shape[0], -1).double()
        return torch.maximum(self.lo - f, f - self.hi).clamp_min(0).amax(1)


def _table(v: Tensor, d: int, what: str) -> Tensor:
    """(K, *D) or (*D) -> (K, d) float64."""
    v = torch.as_tensor(v, dtype=torch.float64)
    if v.numel() % d or v.numel() == 0:
        raise ConstraintError(f"{what} has {v.numel()} values, not a multiple of the sample size {d}")
    return v.reshape(-1, d)


class Affine:
    """{x : x_M = y_M (per-sample table row), A x = b} on samples of ``shape``; either part may be absent."""

    def __init__(self, shape: tuple[int, ...], mask: Tensor | None = None, known: Tensor | None = None,
                 A: Tensor | None = None, b: Tensor | None = None, rtol: float = 1e-6):
        self.shape, self.d = tuple(shape), math.prod(shape)
        d = self.d
        if (mask is None) != (known is None):
            raise ConstraintError("fixed values need both a mask and the known values")
        if (A is None) != (b is None):
            raise ConstraintError("a linear constraint needs both A and b")
        if mask is None and A is None:
            raise ConstraintError("an affine constraint needs fixed values, A x = b, or both")
        m = torch.zeros(1, d, dtype=torch.float64) if mask is None else _table(mask, d, "the mask")
        y = torch.zeros(1, d, dtype=torch.float64) if known is None else _table(known, d, "the known values")
        if not bool(((m == 0) | (m == 1)).all()):
            raise ConstraintError("the mask must be binary (0 = unknown, 1 = known)")
        if not bool(torch.isfinite(y).all()):
            raise ConstraintError("the known values must be finite")
        if m.shape[0] != y.shape[0] and 1 not in (m.shape[0], y.shape[0]):
            raise ConstraintError(f"the mask has {m.shape[0]} rows and the known values {y.shape[0]}: give one "
                                  "of each, one of one and many of the other, or equally many")
        K = max(m.shape[0], y.shape[0])
        self.fixed = mask is not None
        self.mask, self.known = m.expand(K, d).contiguous(), (y * m).expand(K, d).contiguous()
        self.A = self.b = None
        self.pinv: list[Tensor] = []  # per table row: A_F⁺ (d, k), zero rows on the known coordinates
        self.b_free: Tensor | None = None  # (K, k): b' = b - A (m ⊙ y)
        if A is not None:
            A = torch.as_tensor(A, dtype=torch.float64)
            A = A.reshape(A.shape[0], -1) if A.ndim > 1 else A.reshape(1, -1)
            b = torch.as_tensor(b, dtype=torch.float64).reshape(-1)
            if A.shape[1] != d or b.numel() != A.shape[0]:
                raise ConstraintError(f"A x = b needs A of shape (k, {d}) and b of shape (k,); got A "
                                      f"{tuple(A.shape)} and b {tuple(b.shape)}")
            if not (bool(torch.isfinite(A).all()) and bool(torch.isfinite(b).all())):
                raise ConstraintError("A and b must be finite")
            self.A, self.b = A, b
            self.norms = A.norm(dim=1).clamp_min(1e-300)  # ‖a_i‖, for distances to each hyperplane
            self.b_free = b[None] - self.known @ A.T
            for k in range(K):
                A_F = A * (1 - self.mask[k])[None]  # known columns zeroed
                P = torch.linalg.pinv(A_F)  # (d, k): rows of known coordinates are zero
                res = (A_F @ (P @ self.b_free[k]) - self.b_free[k]).norm()
                if float(res) > rtol * max(1.0, float(self.b_free[k].norm())):
                    what = "with these fixed values " if self.fixed else ""
                    raise ConstraintError(f"A x = b has no solution {what}(least-squares residual {float(res):.3g})")
                self.pinv.append(P)

    @property
    def rows(self) -> int:
        """K, the number of table rows."""
        return self.mask.shape[0]

    def project(self, x: Tensor, rows: Tensor, scale: float = 1.0) -> Tensor:
        """Π onto scale·C for x (B, *D) whose samples have indices ``rows`` (B,); float64 inside, x's dtype out."""
        B = x.shape[0]
        f = x.reshape(B, self.d).double()
        k = (rows.to(torch.long).cpu() % self.rows)
        m, y = self.mask[k].to(f.device), self.known[k].to(f.device)
        f = m * (scale * y) + (1 - m) * f
        if self.A is not None:
            A = self.A.to(f.device)
            r = f @ A.T - scale * self.b.to(f.device)  # (B, k) = A_F x_F - scale·b' (x_M is already scale·y_M)
            for j in k.unique().tolist():
                sel = (k == j).nonzero().squeeze(1).to(f.device)
                f[sel] = f[sel] - r[sel] @ self.pinv[j].to(f.device).T
        return f.reshape(x.shape).to(x.dtype)

    def fixed_values(self, rows: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        """(mask, known) of samples ``rows`` shaped and typed like ``like`` (B, *D)."""
        k = rows.to(torch.long).cpu() % self.rows
        return tuple(v[k].reshape(like.shape).to(like) for v in (self.mask, self.known))  # type: ignore[return-value]

    def violation(self, x: Tensor, rows: Tensor) -> Tensor:
        """(B,) largest distance from the fixed values and from each hyperplane a_i x = b_i."""
        f = x.reshape(x.shape[0], self.d).double()
        k = rows.to(torch.long).cpu() % self.rows
        m, y = self.mask[k].to(f.device), self.known[k].to(f.device)
        v = (m * (f - y)).abs().amax(1)
        if self.A is not None:
            lin = ((f @ self.A.to(f.device).T - self.b.to(f.device)).abs() / self.norms.to(f.device)).amax(1)
            v = torch.maximum(v, lin)
        return v


@dataclass(frozen=True)
class Constraint:
    """C = box ∩ affine (either may be None; not both a box and A x = b)."""

    box: Box | None = None
    affine: Affine | None = None

    def __post_init__(self) -> None:
        if self.box is None and self.affine is None:
            raise ConstraintError("a constraint needs a box, fixed values or A x = b")
        if self.box is not None and self.affine is not None:
            if self.affine.A is not None:
                raise ConstraintError("a box and A x = b together are not supported (their intersection needs an "
                                      "iterative projection); use one of them")
            m, y = self.affine.mask, self.affine.known
            if bool(((m == 1) & ((y < self.box.lo) | (y > self.box.hi))).any()):
                raise ConstraintError(f"known values lie outside the box [{self.box.lo:g}, {self.box.hi:g}]: the "
                                      "constraint is infeasible")

    def project(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """Π_C(x) for x (B, *D) with sample indices ``rows`` (default 0..B-1)."""
        rows = torch.arange(x.shape[0]) if rows is None else rows
        if self.box is not None:
            x = self.box.project(x)
        return x if self.affine is None else self.affine.project(x, rows)

    def violation(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """(B,) float64: 0 on C, else the largest distance of any part (see the module docstring)."""
        rows = torch.arange(x.shape[0]) if rows is None else rows
        v = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        if self.box is not None:
            v = torch.maximum(v, self.box.violation(x))
        if self.affine is not None:
            v = torch.maximum(v, self.affine.violation(x, rows))
        return v


def make_constraint(shape: tuple[int, ...], *, box: tuple[float, float] | None = None, mask: Tensor | None = None,
                    known: Tensor | None = None, A: Tensor | None = None, b: Tensor | None = None) -> Constraint:
    """The constraint on samples of ``shape`` from its parts (each optional; see the module docstring)."""
    affine = Affine(shape, mask, known, A, b) if (mask is not None or A is not None) else None
    return Constraint(None if box is None else Box(float(box[0]), float(box[1])), affine)
