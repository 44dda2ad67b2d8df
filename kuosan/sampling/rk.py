"""Embedded Runge–Kutta pairs with a step size per batch row (Hairer, Nørsett & Wanner, Solving ODEs I, §II.4).

Every row of a batch is its own initial-value problem with its own time, step size and accept/reject decision;
one function evaluation serves all rows still running (the function receives a per-row time). A row's result
therefore depends on that row alone, not on which rows share its batch — an adaptive solver with one step size for
the batch (torchdiffeq's) ties each sample to the others through the shared error norm.

Methods (both first-same-as-last, so an accepted step costs stages - 1 evaluations):
``dopri5`` Dormand & Prince 1980, order 5(4); ``bosh3`` Bogacki & Shampine 1989, order 3(2).
Control: RMS error per row scaled by atol + rtol·max(|y|, |y_new|), factor 0.9·err^{-1/q} in [0.2, 10] (no
shrinking after an accepted step); initial step by Hairer et al.'s algorithm (one extra evaluation).
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Literal, get_args

import torch
from torch import Tensor

Method = Literal["dopri5", "bosh3"]
METHODS: tuple[str, ...] = get_args(Method)
# f(τ (R,) float64, y (R, *D), rows (R,) long) -> (dy/dτ (R, *D), aux (R, *D)): rows indexes the batch
RowFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]
# on_stop(j, y (B, *D), aux (B, *D)) once every row has passed stop j (y interpolated there)
StopFn = Callable[[int, Tensor, Tensor], None]


@dataclass(frozen=True)
class Tableau:
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]  # row j: coefficients of k_0..k_{j-1}; the last row is b (FSAL)
    e: tuple[float, ...]  # b - b̂: error estimate weights
    q: int  # order of the error estimate + 1 (controller exponent 1/q)


TABLEAUS = {
    "dopri5": Tableau(
        c=(0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1),
        a=((), (1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
           (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
           (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
           (35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)),
        e=(35 / 384 - 5179 / 57600, 0, 500 / 1113 - 7571 / 16695, 125 / 192 - 393 / 640,
           -2187 / 6784 + 92097 / 339200, 11 / 84 - 187 / 2100, -1 / 40),
        q=5),
    "bosh3": Tableau(
        c=(0, 1 / 2, 3 / 4, 1),
        a=((), (1 / 2,), (0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
        e=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
        q=3),
}


def _col(v: Tensor, like: Tensor) -> Tensor:
    """(R,) float64 -> (R, 1, ..., 1) in like's dtype."""
    return v.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def _rms(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).double().pow(2).mean(1).sqrt()


def _hermite(theta: Tensor, h: Tensor, y0: Tensor, f0: Tensor, y1: Tensor, f1: Tensor) -> Tensor:
    """Cubic Hermite interpolant at fraction θ (R,) of a step of size h (R,) (third order: for reporting only)."""
    th, hh = _col(theta, y0), _col(h, y0)
    h00, h10, h01, h11 = 2 * th**3 - 3 * th**2 + 1, th**3 - 2 * th**2 + th, -2 * th**3 + 3 * th**2, th**3 - th**2
    return h00 * y0 + h10 * hh * f0 + h01 * y1 + h11 * hh * f1


class _Stops:
    """Dense output at the stop times: per stop a (B, *D) buffer filled row by row as rows pass it, reported (in
    order) once every row has."""

    def __init__(self, stops: list[float] | None, like: Tensor, on_stop: StopFn | None):
        self.times, self.on_stop, self.like = list(stops or []), on_stop, like
        self.filled = [torch.zeros(like.shape[0], dtype=torch.bool, device=like.device) for _ in self.times]
        self.values: list[Tensor | None] = [None for _ in self.times]  # allocated when first reached
        self.reported = 0

    def record(self, rows: Tensor, t0: Tensor, t1: Tensor, y0: Tensor, f0: Tensor, y1: Tensor, f1: Tensor) -> None:
        """Rows ``rows`` stepped from (t0, y0, f0) to (t1, y1, f1): interpolate the stops they passed."""
        for j in range(bisect_right(self.times, float(t0.min())), bisect_right(self.times, float(t1.max()))):
            s = self.times[j]
            hit = (t0 < s) & (s <= t1)
            if bool(hit.any()):
                h = t1[hit] - t0[hit]
                if self.values[j] is None:
                    self.values[j] = torch.empty_like(self.like)
                self.values[j][rows[hit]] = _hermite((s - t0[hit]) / h, h, y0[hit], f0[hit], y1[hit], f1[hit])
                self.filled[j][rows[hit]] = True

    def report(self, aux: Tensor) -> None:
        while self.reported < len(self.times) and bool(self.filled[self.reported].all()):
            if self.on_stop is not None:
                self.on_stop(self.reported, self.values[self.reported], aux)
            self.values[self.reported] = None  # free
            self.reported += 1


def _initial_step(f: RowFn, y: Tensor, k0: Tensor, rows: Tensor, rtol: float, atol: float, q: int,
                  length: float) -> Tensor:
    """Hairer et al. II.4 per row: h0 from |y|/|f|, refined by one Euler trial step (one evaluation)."""
    scale = atol + rtol * y.abs()
    d0, d1 = _rms(y / scale), _rms(k0 / scale)
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1).clamp(max=length)
    k1, _ = f(h0, y + _col(h0, y) * k0, rows)
    dm = torch.maximum(d1, _rms((k1 - k0) / scale) / h0)
    h = torch.minimum(100 * h0, torch.where(dm <= 1e-15, (h0 * 1e-3).clamp_min(1e-6), (0.01 / dm) ** (1.0 / (q + 1))))
    return torch.where(torch.isfinite(h) & (h > 0), h, torch.full_like(h, 1e-6 * length))


def solve(f: RowFn, y0: Tensor, length: float, *, rtol: float, atol: float, method: Method = "dopri5",
          stops: list[float] | None = None, on_stop: StopFn | None = None, max_steps: int = 100_000) -> Tensor:
    """y(τ = length) for dy/dτ = f(τ, y) from y(0) = y0 (B, *D), every row adaptively; ``stops`` (increasing, in
    (0, length]) are reported through ``on_stop`` in order, each once all rows have passed it."""
    tab = TABLEAUS[method]

    def rhs(tau: Tensor, y: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:  # in y0's dtype throughout
        k, a = f(tau, y, rows)
        return k.to(y0.dtype), a.to(y0.dtype)

    B, dev = y0.shape[0], y0.device
    rows = torch.arange(B, device=dev)
    tau = torch.zeros(B, dtype=torch.float64, device=dev)  # (B,) each row's own time
    y = y0.clone()
    k0, aux = rhs(tau, y, rows)  # FSAL: the slope at each row's current point
    if not bool(torch.isfinite(k0).all()):
        raise RuntimeError("the ODE right-hand side is not finite at the start (the denoiser returned NaN or ±inf)")
    h = _initial_step(rhs, y, k0, rows, rtol, atol, tab.q, length)  # (B,) each row's next step size
    out = _Stops(stops, y, on_stop)
    for _ in range(max_steps):
        act = (tau < length).nonzero().squeeze(1)  # rows still running
        if act.numel() == 0:
            return y
        ta, ya = tau[act], y[act]
        ha = torch.minimum(h[act], length - ta)
        if bool(((ha <= 1e-14 * length) | ~torch.isfinite(ha)).any()):
            raise RuntimeError("adaptive ODE step size underflow (non-finite or stiff right-hand side)")
        ks = [k0[act]]
        for j in range(1, len(tab.c)):
            yj = ya
            for l, a_jl in enumerate(tab.a[j]):
                if a_jl != 0:
                    yj = yj + _col(ha * a_jl, ya) * ks[l]
            kj, aux_j = rhs(ta + tab.c[j] * ha, yj, act)
            ks.append(kj)
        y_new = yj  # the FSAL stage sits at the new point
        err = sum(_col(ha * e, ya) * k for e, k in zip(tab.e, ks) if e != 0)
        ratio = _rms(err / (atol + rtol * torch.maximum(ya.abs(), y_new.abs())))
        ratio = torch.where(torch.isfinite(ratio), ratio, torch.full_like(ratio, float("inf")))
        ok = ratio <= 1
        factor = (0.9 * ratio.clamp_min(1e-10) ** (-1.0 / tab.q)).clamp(max=10.0)
        h[act] = ha * torch.where(ok, factor.clamp_min(1.0), factor.clamp_min(0.2))
        if bool(ok.any()):
            acc, t0 = act[ok], ta[ok]
            t1 = torch.where(ha[ok] >= length - t0, torch.full_like(t0, length), t0 + ha[ok])  # land on the end
            out.record(acc, t0, t1, ya[ok], ks[0][ok], y_new[ok], ks[-1][ok])
            tau[acc], y[acc], k0[acc], aux[acc] = t1, y_new[ok], ks[-1][ok], aux_j[ok]
        out.report(aux)
    raise RuntimeError(f"adaptive ODE solver did not finish in {max_steps} steps; loosen rtol/atol")
