"""Particles of a 2-D model moving from noise to data under a sampler, with the exact probability-flow ODE paths
when the data is a known mixture, and two runs side by side (a rectified flow before and after reflow).

The exact paths integrate Song et al. 2021's PF-ODE (Eq. (13)) with the mixture's exact denoiser
(kuosan.exact.pf_ode_solve) from the same x_T through the sampler's grid, refined. Where α(t_0) = 0 (σ̃ = ∞: flow,
zero terminal SNR) they start at σ̃ = SIGMA_CAP, where the VP state differs from x_T by O(1/σ̃).
States are drawn as x_t on paths whose prior is N(0, I) and as x_t/√(α_t² + σ_t²) on VE (prior N(0, σ_max² I)).
Straightness is Liu et al. 2022's S = ∫ E‖(x_0 - x_T) - dx/du‖² du on normalised time u = t/t_max ∈ [u_0, 0],
summed over the sampler's steps: 0 for straight paths at constant speed, the aim of reflow.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Sequence

import torch
from PIL import Image
from torch import Tensor

from ..paths import Path, f64, ve_sigma
from .render import figure_image, pyplot, save_png

SIGMA_CAP = 1e4


def display_scale(path: Path, ts: Tensor) -> Tensor:
    """The divisor of the drawn states at times ts: 1 when the prior is N(0, I), else √(α² + σ²)."""
    ts = f64(ts)
    if path.prior_std == 1.0:
        return torch.ones_like(ts)
    return (path.alpha(ts) ** 2 + path.sigma(ts) ** 2).sqrt()


def straightness(xs: Tensor, ts: Tensor, t_max: float) -> float:
    """Liu et al. 2022's straightness of trajectories xs (N+1, n, d) at descending times ts (N+1,), per unit of
    u = t/t_max: Σ_i Δu_i · mean_n ‖(x_N - x_0)/(u_N - u_0) - (x_{i+1} - x_i)/(u_{i+1} - u_i)‖²."""
    u = f64(ts) / t_max
    xs = xs.to(torch.float64)
    du = u[1:] - u[:-1]  # (N,) negative: time runs down
    chord = (xs[-1] - xs[0]) / (u[-1] - u[0])  # (n, d)
    vel = (xs[1:] - xs[:-1]) / du[:, None, None]  # (N, n, d)
    return float((du.abs() * ((vel - chord) ** 2).sum(-1).mean(-1)).sum())


def refined_times(path: Path, ts: Tensor, refine: int) -> Tensor:
    """ts (N+1,) with refine - 1 times inserted in each interval, equally spaced in λ (clamped to the σ̃ range
    [0.002, SIGMA_CAP]): the PF-ODE moves about evenly in log σ̃, so the drawn exact paths are smooth."""
    ts = f64(ts)
    lam = path.log_snr(ts).clamp(-2 * math.log(SIGMA_CAP), 2 * math.log(500.0))
    pieces = []
    for j in range(len(ts) - 1):
        inner = path.t_of_log_snr(torch.linspace(float(lam[j]), float(lam[j + 1]), refine + 1,
                                                 dtype=torch.float64)[1:-1])
        pieces += [ts[j:j + 1], inner.clamp(float(ts[j + 1]), float(ts[j]))]
    return torch.cat(pieces + [ts[-1:]])


def exact_paths(mixture: Any, path: Path, x_T: Tensor, ts: Tensor, refine: int = 4, rtol: float = 1e-7,
                atol: float = 1e-9) -> tuple[Tensor, Tensor]:
    """Exact PF-ODE states (M, n, d) from x_T (n, d) at ts[0] through refined_times(ts) (M = refine·N + 1 times,
    returned too; every ``refine``-th is a grid time), in the path's own coordinates."""
    from ..exact import pf_ode_solve

    fine = refined_times(path, ts, refine)
    norm = (path.alpha(fine) ** 2 + path.sigma(fine) ** 2).sqrt()  # x_vp = x_path / √(α² + σ²)
    sig = ve_sigma(path, fine).clamp(max=SIGMA_CAP)
    vp = x_T.to(torch.float64) / norm[0]
    out = [x_T.to(torch.float64)]
    for j in range(len(fine) - 1):
        if float(sig[j]) > float(sig[j + 1]):  # (two times above the cap: nothing to integrate)
            vp = pf_ode_solve(mixture, vp, float(sig[j]), float(sig[j + 1]), rtol=rtol, atol=atol)
        out.append(vp * norm[j + 1])
    return torch.stack(out), fine


def trajectory_story(states: dict[str, Tensor], path: Path, mixture: Any = None, refine: int = 4) -> dict[str, Any]:
    """The arrays behind the picture for one run: ts, x (N+1, n, 2) and x0 (N, n, 2) from steps.sampler_states;
    scale (N+1,) the display divisor; straightness; with a mixture, exact (M, n, 2) at exact_ts (M,)."""
    x = states["x"]
    if x.ndim != 3 or x.shape[-1] != 2:
        raise ValueError(f"trajectory needs a model of 2-D data, got samples of shape {tuple(x.shape[2:])}")
    out = {"ts": states["ts"], "x": x, "x0": states["x0"], "scale": display_scale(path, states["ts"]),
           "straightness": straightness(x, states["ts"], path.t_max), "path": path.kind}
    if mixture is not None:
        ex, fine = exact_paths(mixture, path, x[0], states["ts"], refine)
        out.update(exact=ex, exact_ts=fine, exact_scale=display_scale(path, fine), refine=refine,
                   exact_straightness=straightness(ex[::refine], states["ts"], path.t_max))
    return out


def _limits(stories: Sequence[dict[str, Any]], reference: Tensor | None) -> float:
    pts = [s["x"] / s["scale"][:, None, None] for s in stories]
    if reference is not None:
        pts.append(reference[None].to(torch.float64))
    r = max(float(torch.quantile(p.abs().flatten().to(torch.float64), 0.995)) for p in pts)
    return 1.1 * max(r, 1.0)


def _panel(ax: Any, s: dict[str, Any], upto: int, lim: float, reference: Tensor | None, title: str) -> None:
    """One run's particles: trails up to step ``upto`` (exact paths dashed), positions there."""
    if reference is not None:
        ax.scatter(reference[:, 0], reference[:, 1], s=2, color="0.8", zorder=0)
    xs = (s["x"] / s["scale"][:, None, None]).numpy()
    if "exact" in s:
        ex = (s["exact"] / s["exact_scale"][:, None, None]).numpy()
        k = s["refine"] * upto + 1  # the fine grid holds every grid time at a multiple of refine
        for p in range(ex.shape[1]):
            ax.plot(ex[:k, p, 0], ex[:k, p, 1], color="k", lw=0.5, ls="--", alpha=0.5)
        ax.scatter(ex[k - 1, :, 0], ex[k - 1, :, 1], marker="x", s=10, color="k", lw=0.7, zorder=3)
    for p in range(xs.shape[1]):
        ax.plot(xs[:upto + 1, p, 0], xs[:upto + 1, p, 1], color="C0", lw=0.6, alpha=0.5)
    ax.scatter(xs[0, :, 0], xs[0, :, 1], s=4, color="0.5", zorder=2)
    ax.scatter(xs[upto, :, 0], xs[upto, :, 1], s=9, color="C3", zorder=4)
    ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xticks=[], yticks=[])
    ax.set_title(title, fontsize=9)


def _titles(stories: Sequence[dict[str, Any]], names: Sequence[str], upto: int) -> list[str]:
    out = []
    for s, name in zip(stories, names):
        t = float(s["ts"][upto])
        extra = f"; exact ODE: S = {s['exact_straightness']:.3g}" if "exact" in s else ""
        out.append(f"{name}\nt = {t:.3g}, step {upto}/{len(s['ts']) - 1}; straightness S = {s['straightness']:.3g}"
                   f"{extra}")
    return out


def _figure(stories: Sequence[dict[str, Any]], names: Sequence[str], upto: int, lim: float,
            reference: Tensor | None) -> Any:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(stories), figsize=(4.8 * len(stories), 5.4), squeeze=False)
    for ax, s, title in zip(axes[0], stories, _titles(stories, names, upto)):
        _panel(ax, s, upto, lim, reference, title)
    note = "grey: x_T; red: particles; blue: their paths" + ("; black dashed/×: exact PF-ODE" if any(
        "exact" in s for s in stories) else "") + ("" if all(float(s["scale"].max()) == 1 for s in stories)
                                                  else "; drawn as x_t/√(α²+σ²)")
    lines = textwrap.wrap(note, 75 * len(stories))
    fig.suptitle("\n".join(lines), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.1 + 0.17 * len(lines)) / fig.get_size_inches()[1]))
    return fig


def draw_trajectories(stories: Sequence[dict[str, Any]], names: Sequence[str], out: Any,
                      reference: Tensor | None = None) -> None:
    """A PNG of the whole trajectories, one panel per run."""
    lim = _limits(stories, reference)
    save_png(_figure(stories, names, len(stories[0]["ts"]) - 1, lim, reference), out)


def trajectory_frames(stories: Sequence[dict[str, Any]], names: Sequence[str],
                      reference: Tensor | None = None) -> list[Image.Image]:
    """One picture per sampler step (N + 1 frames), particles moving with their trails."""
    lim = _limits(stories, reference)
    n = len(stories[0]["ts"])
    return [figure_image(_figure(stories, names, k, lim, reference)) for k in range(n)]


def reference_points(mixture: Any, data: Tensor | None, n: int = 1500, seed: int = 0) -> Tensor | None:
    """Grey background points: draws of the exact mixture when known, else the run's data (n, 2), or None."""
    if mixture is not None:
        return mixture.sample(n, torch.Generator().manual_seed(seed)).float()
    if data is not None and data.ndim == 2 and data.shape[1] == 2:
        return data[:n].float()
    return None


def same_start(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    """Whether two runs' particles start from the same x_T (same seed, same prior)."""
    return a["x"].shape == b["x"].shape and bool(torch.allclose(a["x"][0], b["x"][0]))

