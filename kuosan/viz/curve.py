"""A smooth curve diffusing step by step under a Gaussian path, beside the histogram of its values going to N(0, 1).

The curve is pushed through the forward chain one jump at a time, q(x_t|x_s) = N(α_t/α_s x_s, σ²_{t|s} I) with
σ²_{t|s} = σ_t² - (α_t/α_s)² σ_s² (Kingma et al. 2021 Eq. (4); Ho et al. 2020 Eq. (2) on the discrete chain),
so consecutive frames are one trajectory, and every frame still has the marginal q(x_t|x_0) = N(α_t x_0, σ_t² I).
Frames are taken at equal steps of normalised time u = t/t_max. Values are drawn as x_t/√(α_t² + σ_t²), the
state of the equivalent variance-preserving process (identical to x_t on VP paths; on VE and flow paths it keeps
the scale fixed), whose values go to N(0, 1) at t_max on every path.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..forward import jump_variance
from ..paths import Path, f64
from .render import figure_image, pyplot, save_png
from .sources import describe_path

HIST_RANGE = (-4.0, 4.0)
HIST_BINS = 40


def smooth_curve(length: int = 256, seed: int = 0) -> Tensor:
    """A smooth curve (length,) float64: one draw of the curves' Gaussian process, kuosan.exact.curve_cov, with the
    correlation length 8/64 of the curve's length (the ``curves`` data set at length 64)."""
    from ..exact import curve_cov

    K = curve_cov(length, length=8.0 * length / 64)
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.cholesky(K) @ torch.randn(length, generator=g, dtype=torch.float64)


def standardise(x: Tensor, std: float = 0.5) -> Tensor:
    """x shifted and scaled to mean 0 and standard deviation ``std`` (0.5: the built-in curve's scale,
    EDM's σ_data)."""
    s = float(x.std())
    if not s > 0:
        raise ValueError("the signal is constant: there is no curve to diffuse")
    return (x - x.mean()) / s * std


def frame_times(path: Path, frames: int) -> Tensor:
    """t_k = t_max · k/(frames - 1), k = 0..frames-1 (float64): equal steps of normalised time, from data to noise."""
    if frames < 2:
        raise ValueError(f"--frames must be at least 2, got {frames}")
    return torch.linspace(0.0, 1.0, frames, dtype=torch.float64) * path.t_max


def diffuse_steps(path: Path, x0: Tensor, ts: Tensor, generator: torch.Generator) -> Tensor:
    """States (F, *x0.shape) at the ascending times ts (F,), ts[0] = 0, by successive jumps t_{k-1} -> t_k of
    q(x_t|x_s) = N(α_t/α_s x_s, σ²_{t|s} I); float64."""
    ts = f64(ts)
    if float(ts[0]) != 0.0 or not bool((ts[1:] > ts[:-1]).all()):
        raise ValueError("frame times must start at 0 and increase")
    x = x0.to(torch.float64)
    out = [x]
    for s, t in zip(ts[:-1], ts[1:]):
        ratio = path.alpha(t) / path.alpha(s)  # α_s > 0 for every s < t_max
        x = ratio * x + jump_variance(path, t, s).clamp_min(0).sqrt() * torch.randn(
            x.shape, generator=generator, dtype=torch.float64)
        out.append(x)
    return torch.stack(out)


def curve_story(x0: Tensor, path: Path, frames: int = 40, seed: int = 0) -> dict[str, Any]:
    """The arrays behind the picture: t, u = t/t_max, alpha, sigma, log_snr (F,); x0 (L,); x (F, L) the states;
    scale = √(α² + σ²) (F,); z = x/scale (F, L); hist (F, HIST_BINS) the density histogram of z on HIST_RANGE."""
    ts = frame_times(path, frames)
    x = diffuse_steps(path, x0, ts, torch.Generator().manual_seed(seed))
    a, s = path.alpha(ts), path.sigma(ts)
    scale = (a**2 + s**2).sqrt()
    z = x / scale[:, None]
    edges = np.linspace(*HIST_RANGE, HIST_BINS + 1)
    hist = np.stack([np.histogram(row, bins=edges, density=False)[0] / (len(row) * (edges[1] - edges[0]))
                     for row in z.numpy()])
    return {"t": ts, "u": ts / path.t_max, "alpha": a, "sigma": s, "log_snr": path.log_snr(ts), "x0": x0, "x": x,
            "scale": scale, "z": z, "hist": hist, "hist_edges": edges, "path": describe_path(path)}


def _ylabel(data: dict[str, Any]) -> str:
    return "x_t" if bool((data["scale"] - 1).abs().max() < 1e-9) else "x_t / √(α_t² + σ_t²)"


def fmt_lam(lam: Any) -> str:
    """λ for a title: ±∞ written as such."""
    lam = float(lam)
    return f"{lam:.2f}" if math.isfinite(lam) else ("+∞" if lam > 0 else "-∞")


def _title(data: dict[str, Any], k: int) -> str:
    return (f"t/t_max = {float(data['u'][k]):.2f}   α = {float(data['alpha'][k]):.3f}   "
            f"σ = {float(data['sigma'][k]):.3g}   λ = {fmt_lam(data['log_snr'][k])}")


def _ylim(data: dict[str, Any]) -> float:
    return max(3.5, 1.1 * float(data["z"].abs().max()))


class _Frame:
    """One figure (curve | histogram) whose artists are updated per frame (drawing 40 figures afresh is slower)."""

    def __init__(self, data: dict[str, Any], size: tuple[float, float] = (9.0, 3.4)):
        plt = pyplot()
        self.data = data
        self.fig, (self.ax, self.hx) = plt.subplots(1, 2, figsize=size, gridspec_kw={"width_ratios": [2.2, 1]})
        n, lim = data["x"].shape[1], _ylim(data)
        idx = np.arange(n)
        self.ax.plot(idx, data["x0"].numpy() / float(data["scale"][0]), color="0.75", lw=1, label="x_0")
        self.mean, = self.ax.plot(idx, np.zeros(n), "--", color="C1", lw=1, label="α_t x_0 (signal part)")
        self.line, = self.ax.plot(idx, np.zeros(n), color="C0", lw=1.2, label=_ylabel(data))
        self.ax.set(xlabel="index", ylabel=_ylabel(data), ylim=(-lim, lim), xlim=(0, n - 1))
        self.ax.legend(loc="upper right", fontsize=7)
        edges = data["hist_edges"]
        self.bars = self.hx.bar(edges[:-1], np.zeros(len(edges) - 1), width=edges[1] - edges[0], align="edge",
                                color="C0", alpha=0.6, label="values")
        g = np.linspace(*HIST_RANGE, 200)
        self.hx.plot(g, np.exp(-g**2 / 2) / math.sqrt(2 * math.pi), color="k", lw=1, label="N(0, 1)")
        self.hx.set(xlim=HIST_RANGE, ylim=(0, max(1.0, 1.05 * float(np.max(data["hist"])))), xlabel="value",
                    ylabel="density")
        self.hx.legend(loc="upper right", fontsize=7)
        self.fig.tight_layout(rect=(0, 0, 1, 0.92))
        self.sup = self.fig.suptitle("", fontsize=10)

    def show(self, k: int) -> None:
        d = self.data
        self.line.set_ydata(d["z"][k].numpy())
        self.mean.set_ydata((d["alpha"][k] * d["x0"] / d["scale"][k]).numpy())
        for bar, h in zip(self.bars, d["hist"][k]):
            bar.set_height(h)
        self.sup.set_text(f"{d['path']} path: {_title(d, k)}")


def curve_gif_frames(data: dict[str, Any]) -> list[Image.Image]:
    """One picture per frame: the curve (with its signal part α_t x_0) beside the histogram of its values."""
    f = _Frame(data)
    frames = []
    for k in range(len(data["t"])):
        f.show(k)
        frames.append(figure_image(f.fig, close=False))
    pyplot().close(f.fig)
    return frames


def draw_curve(data: dict[str, Any], path: Any, columns: int = 5) -> None:
    """A PNG of ``columns`` snapshots at equal steps of t/t_max: the curve above, its value histogram below."""
    plt = pyplot()
    F = len(data["t"])
    ks = sorted({round(k * (F - 1) / (columns - 1)) for k in range(columns)})
    fig, axes = plt.subplots(2, len(ks), figsize=(2.6 * len(ks), 4.6), squeeze=False)
    lim, edges = _ylim(data), data["hist_edges"]
    g = np.linspace(*HIST_RANGE, 200)
    for c, k in enumerate(ks):
        ax, hx = axes[0, c], axes[1, c]
        ax.plot(data["z"][k].numpy(), color="C0", lw=1)
        ax.plot((data["alpha"][k] * data["x0"] / data["scale"][k]).numpy(), "--", color="C1", lw=0.8)
        ax.set(ylim=(-lim, lim), title=f"t/t_max = {float(data['u'][k]):.2f}\nλ = {fmt_lam(data['log_snr'][k])}")
        hx.bar(edges[:-1], data["hist"][k], width=edges[1] - edges[0], align="edge", color="C0", alpha=0.6)
        hx.plot(g, np.exp(-g**2 / 2) / math.sqrt(2 * math.pi), color="k", lw=1)
        hx.set(xlim=HIST_RANGE, ylim=(0, max(1.0, 1.05 * float(np.max(data["hist"])))))
        if c:
            ax.set_yticklabels([])
            hx.set_yticklabels([])
    axes[0, 0].set_ylabel(_ylabel(data))
    axes[1, 0].set_ylabel("density (— N(0, 1))")
    fig.suptitle(f"a smooth curve diffusing on the {data['path']} path (dashed: its signal part α_t x_0)", fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
