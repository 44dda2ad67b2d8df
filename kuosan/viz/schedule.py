"""α, σ, SNR = α²/σ² and λ = log(α²/σ²) of every path and schedule kind side by side,
on normalised time u = t/t_max.

Paths live on different time axes (the discrete chain on t ∈ [0, T], VE/EDM on t = σ̃ ∈ [0, σ_max], the others on
[0, 1]); dividing by t_max puts them on one axis, u ∈ [0, 1], data at u = 0 and the prior at u = 1. Schedules:
DDPM's linear β (Ho et al. 2020), Stable Diffusion's scaled linear, the cosine ᾱ (Nichol & Dhariwal 2021), the
sigmoid ᾱ (Jabri et al. 2023), zero terminal SNR (Lin et al. 2024), the continuous VP cosine and linear-β (Song
et al. 2021), VE / EDM (α = 1, σ = t; Karras et al. 2022) and the flow / rectified-flow interpolant
α = 1 - t, σ = t.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..paths import Path, make_path
from .render import pyplot, save_png

# name -> (legend label, the path)
SCHEDULES: dict[str, tuple[str, Callable[[], Path]]] = {
    "linear": ("DDPM linear β (discrete)", lambda: make_path("discrete_vp", schedule="linear")),
    "scaled_linear": ("scaled linear β (SD, discrete)", lambda: make_path("discrete_vp", schedule="scaled_linear")),
    "cosine": ("cosine ᾱ (discrete)", lambda: make_path("discrete_vp", schedule="cosine")),
    "sigmoid": ("sigmoid ᾱ (discrete)", lambda: make_path("discrete_vp", schedule="sigmoid")),
    "zero_snr": ("linear β, zero terminal SNR", lambda: make_path("discrete_vp", schedule="linear",
                                                                   zero_terminal_snr=True)),
    "vp_cosine": ("VP cosine (continuous)", lambda: make_path("vp_cosine")),
    "vp_linear": ("VP linear β (continuous)", lambda: make_path("vp_linear")),
    "ve": ("VE / EDM (σ = t, σ_max 80)", lambda: make_path("ve")),
    "flow": ("flow (α = 1 - t, σ = t)", lambda: make_path("flow")),
}
QUANTITIES = ("alpha", "sigma", "snr", "log_snr")
# the same schedule in discrete and continuous time shares a colour (continuous dashed): they coincide on u
STYLES = {"linear": ("C0", "-"), "vp_linear": ("C0", "--"), "cosine": ("C2", "-"), "vp_cosine": ("C2", "--"),
          "scaled_linear": ("C1", "-"), "sigmoid": ("C3", "-"), "zero_snr": ("C4", "-"), "ve": ("C5", "-"),
          "flow": ("C9", "-")}


def curves_of(path: Path, u: torch.Tensor) -> dict[str, np.ndarray]:
    """α, σ, SNR = α²/σ², λ = log(α²/σ²) (±∞ at the ends where σ or α vanish) at t = u · t_max."""
    t = u * path.t_max
    a, s, lam = path.alpha(t), path.sigma(t), path.log_snr(t)
    return {"alpha": a.numpy(), "sigma": s.numpy(), "snr": torch.exp(lam).numpy(), "log_snr": lam.numpy()}


def schedule_story(names: Sequence[str], run_path: Path | None = None, run_label: str = "run",
                   points: int = 201) -> dict[str, Any]:
    """The arrays behind the picture: u (points,) the normalised time; <quantity>_<name> (points,) for each
    schedule name and, with a run's path, for "run"; names and labels in plotting order."""
    unknown = [n for n in names if n not in SCHEDULES]
    if unknown:
        raise ValueError(f"unknown schedule kind {unknown[0]!r}; choose from {', '.join(SCHEDULES)}")
    u = torch.linspace(0, 1, points, dtype=torch.float64)
    out: dict[str, Any] = {"u": u.numpy()}
    entries = [(n, SCHEDULES[n][0], SCHEDULES[n][1]()) for n in names]
    if run_path is not None:
        entries.append(("run", run_label, run_path))
    for name, _, path in entries:
        for q, v in curves_of(path, u).items():
            out[f"{q}_{name}"] = v
        out[f"t_max_{name}"] = np.float64(path.t_max)
    out["names"] = np.array([e[0] for e in entries])
    out["labels"] = np.array([e[1] for e in entries])
    return out


def draw_schedules(data: dict[str, Any], out: Any) -> None:
    """Four panels against u = t/t_max: α, σ (log), SNR (log) and λ; the run's own path black and dashed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(16.0, 5.0))
    u = data["u"]
    titles = {"alpha": "α(t)", "sigma": "σ(t)  (log scale)", "snr": "SNR = α²/σ²  (log scale)",
              "log_snr": "λ = log(α²/σ²)"}
    for ax, q in zip(axes, QUANTITIES):
        for name, label in zip(data["names"], data["labels"]):
            y = np.where(np.isfinite(data[f"{q}_{name}"]), data[f"{q}_{name}"], np.nan)
            if q in ("sigma", "snr"):
                y = np.where(y > 0, y, np.nan)  # σ = 0 at the data end, SNR = 0 where α = 0: off a log axis
            color, ls = STYLES.get(str(name), ("k", (0, (4, 2))))
            style = dict(color=color, ls=ls, lw=2.2 if name == "run" else 1.4)
            ax.plot(u, y, label=label, **style)
        ax.set(title=titles[q], xlabel="normalised time t / t_max", xlim=(0, 1))
        if q in ("sigma", "snr"):
            ax.set_yscale("log")
        if q == "log_snr":
            ax.set_ylim(-25, 25)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("noise schedules on a common axis: t divided by each path's t_max (T = 1000, σ_max = 80, or 1)",
                 fontsize=10)
    rows = -(-len(labels) // 5)
    fig.tight_layout(rect=(0, 0.045 * rows + 0.02, 1, 1))
    save_png(fig, out)
