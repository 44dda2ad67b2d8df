"""Consistency distillation's teacher (Song et al. 2023 §4, Alg. 2): a trained kuosan model on any path, read in the
VE frame of the consistency model, and one step of any deterministic registry sampler of it as the ODE solver Φ.

The student lives on the ``ve`` path (x = y, t = σ̃). Any Gaussian path becomes VE under y = x/α, σ̃ = σ/α
(Karras et al. 2022 §2 / Eq. (3)): the teacher's denoiser at VE level σ̃ is D_ve(y, σ̃) = D(α(t) y, t) with
t = t(λ), λ = -2 log σ̃ (``on_ve_path``), so every sampler runs on the teacher unchanged. CD draws one level
index per sample from a fixed grid, so a batch holds at most cd_steps - 1 distinct (σ̃_{n+1}, σ̃_n) pairs; the
batch is grouped by pair and each group takes one sampler step on its own two-point grid (``teacher_step``).
ECT and CD may start the student from the teacher's weights when F's inputs agree (``init_from_teacher``).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from ..broadcast import batch_times, expand
from ..denoiser import Denoiser
from ..paths import VE, Path, f64, ve_sigma
from ..sampling.edm import HEUN_SIGMA_MAX
from ..sampling.grids import VE_SIGMA_START
from ..sampling.registry import check_options, get_sampler

# (x at σ̃_{n+1} (B, *D), σ̃_{n+1} (B,) float64, σ̃_n (B,) float64, cond or None) -> x at σ̃_n (B, *D)
TeacherStep = Callable[[Tensor, Tensor, Tensor, "dict[str, Tensor] | None"], Tensor]


def largest_ve_sigma(path: Path) -> float:
    """The largest finite VE level σ̃ a path reaches: σ̃(t_max), or, where α(t_max) = 0 (flow, zero terminal SNR),
    σ̃ = 80 (Karras et al.'s σ_max, kuosan's start of spacing there) projected onto the path."""
    t = f64(path.t_max)
    a = float(path.alpha(t))
    top = float(path.sigma(t)) / a if a > 0 else math.inf  # σ/α, not exp(-λ/2): VE's 80 stays exactly 80
    if math.isfinite(top):
        return top
    return float(ve_sigma(path, path.t_of_log_snr(f64(-2 * math.log(VE_SIGMA_START)))))


class VEView:
    """Denoiser -> Denoiser on the VE path (α = 1, t = σ̃): D_ve(y, σ̃) = D(α(t) y, t), t = t(λ = -2 log σ̃).

    σ̃ above the path's ``sigma_max`` (the inner path's largest σ̃) is refused by every sampler's grid check, never
    clamped. The inner denoiser's x̂_0 is the VE one unchanged: x_0 is the same in both frames."""

    def __init__(self, inner: Denoiser, sigma_max: float | None = None):
        self.inner = inner
        self.path = VE(sigma_max=largest_ve_sigma(inner.path) if sigma_max is None else sigma_max)
        self.learns_variance = False

    def __call__(self, x_t: Tensor, t: Tensor, **cond: Any) -> Tensor:
        # x_t is the VE state y (B, *D) and t its level σ̃ (cond may hold class labels called y)
        sigma = batch_times(t, x_t)  # (B,) σ̃, float64
        p = self.inner.path
        t_in = p.t_of_log_snr(-2 * sigma.log())  # (B,) the inner path's time with the same λ
        return self.inner(expand(p.alpha(t_in), x_t) * x_t, t_in, **cond)


def on_ve_path(D: Denoiser, sigma_max: float | None = None) -> VEView:
    """The teacher D seen on the VE path of the consistency model (see :class:`VEView`)."""
    return VEView(D, sigma_max)


class _Reached(Exception):
    """Raised by the step callback to stop a sampler once it has reached σ̃_n (carries x there)."""

    def __init__(self, x: Tensor):
        super().__init__("reached")
        self.x = x


def usable_sampler(name: str) -> str | None:
    """None if the registry sampler ``name`` can be the teacher's ODE solver, else why not (one line)."""
    try:
        spec = get_sampler(name)
    except ValueError as e:
        return str(e)
    if not spec.deterministic:
        ode = ", ".join(k for k, s in _registry().items() if s.deterministic)
        return f"sampler {name!r} is stochastic; the teacher's step must solve the probability-flow ODE ({ode})"
    reason = spec.supports(VE())
    return None if reason is None else f"sampler {name!r} cannot run on the VE frame: {reason}"


def _registry() -> dict[str, Any]:
    from ..sampling import SAMPLERS  # the package registers the bespoke solver as well

    return SAMPLERS


def _one_step(fn: Callable[..., Tensor], D: VEView, x: Tensor, s_next: float, s_cur: float,
              cond: dict[str, Tensor], options: dict[str, Any]) -> Tensor:
    """The sampler's first step on the grid [σ̃_{n+1}, σ̃_n, 0]: grids end at 0 (kuosan.sampling.grids), so the
    callback of step 0 returns the state at σ̃_n and stops the sampler before its step into 0."""

    def stop(i: int, x_i: Tensor, x0: Tensor) -> None:
        raise _Reached(x_i)

    grid = torch.tensor([s_next, s_cur, 0.0], dtype=torch.float64)
    try:
        fn(D, x, grid, cond=cond, callback=stop, **options)
    except _Reached as r:
        return r.x
    raise RuntimeError("the sampler finished without reporting its first step")  # pragma: no cover - a bug


@torch.no_grad()
def _batched_euler_heun(D: VEView, x: Tensor, s_next: Tensor, s_cur: Tensor, cond: dict[str, Tensor],
                        correct: bool) -> Tensor:
    """Karras et al. 2022 Alg. 1's step σ̃_{n+1} -> σ̃_n with a level pair per sample (B,) x2, the whole batch in
    one network call (Euler) or two (Heun: the trapezoidal correction where σ̃_{n+1} <= HEUN_SIGMA_MAX, as the
    registry sampler): the registry's euler / heun step of every sample without grouping the batch by pair.
    DDIM (η = 0) is the same Euler step on the VE path (α = 1), so it takes this too."""
    t, s = expand(s_next, x), expand(s_cur, x)  # (B, 1, ...) in x's dtype
    x0 = D(x, s_next, **cond)
    e = (x - x0) / t  # dy/dσ̃ at (y, σ̃_{n+1})
    x_e = x0 + s * e  # the Euler point
    if not correct:
        return x_e
    e_e = (x_e - D(x_e, s_cur, **cond)) / s  # dy/dσ̃ at the Euler point
    corrected = x_e + (0.5 * (s - t)) * (e_e - e)
    return torch.where(expand(s_next <= HEUN_SIGMA_MAX, x).bool(), corrected, x_e)


BATCHED = {"euler": False, "ddim": False, "heun": True}  # sampler -> whether its step has Heun's correction


def teacher_step(teacher: Denoiser, sampler: str = "heun", **options: Any) -> TeacherStep:
    """Φ(x_{n+1}, σ̃_{n+1} -> σ̃_n) of Song et al. 2023 Alg. 2: one step of the deterministic registry sampler
    ``sampler`` (with its ``options``) on the teacher seen in the VE frame, per sample.

    Samples are grouped by their (σ̃_{n+1}, σ̃_n) pair; each group is one sampler call on its own grid. Levels must
    satisfy 0 < σ̃_n < σ̃_{n+1} <= the teacher's largest σ̃ (ValueError otherwise). One step of a multistep solver
    is its first-order start (dpm++2m/3m, unipc: the DDIM step, local error O(h²)); heun and dpm2s are second order
    in one step (O(h³)), ode solves the step adaptively. Euler, DDIM and Heun without options take the whole batch
    at once (:func:`_batched_euler_heun`, the same step; 2 network calls a step instead of 2 per distinct pair)."""
    reason = usable_sampler(sampler)
    if reason is not None:
        raise ValueError(reason)
    spec = get_sampler(sampler)
    opts = check_options(spec, options)
    view = on_ve_path(teacher)

    @torch.no_grad()
    def step(x_next: Tensor, sigma_next: Tensor, sigma_cur: Tensor, cond: dict[str, Tensor] | None = None
             ) -> Tensor:
        B = x_next.shape[0]
        pairs = torch.stack([f64(sigma_next).reshape(-1), f64(sigma_cur).reshape(-1)], 1).cpu()  # (B, 2)
        if pairs.shape[0] != B:
            raise ValueError(f"teacher step: {pairs.shape[0]} noise levels for a batch of {B}")
        if not bool((pairs[:, 1] > 0).all() and (pairs[:, 1] < pairs[:, 0]).all()):
            raise ValueError("teacher step: levels must satisfy 0 < sigma_cur < sigma_next for every sample")
        if float(pairs[:, 0].max()) > view.path.sigma_max:
            raise ValueError(f"teacher step: σ̃ = {float(pairs[:, 0].max()):g} is beyond the teacher's largest "
                             f"noise level {view.path.sigma_max:g}")
        if sampler in BATCHED and not opts:
            dev = x_next.device
            return _batched_euler_heun(view, x_next, pairs[:, 0].to(dev), pairs[:, 1].to(dev), cond or {},
                                       BATCHED[sampler])
        levels, group = torch.unique(pairs, dim=0, return_inverse=True)  # (G, 2), (B,)
        out = torch.empty_like(x_next)
        for g, (s_next, s_cur) in enumerate(levels.tolist()):
            rows = (group == g).nonzero().squeeze(1).to(x_next.device)
            c = {k: v[rows] for k, v in (cond or {}).items()}
            out[rows] = _one_step(spec.fn, view, x_next[rows], s_next, s_cur, c, opts)
        return out

    return step


def _meta_shape(meta: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in meta["shape"])


def check_teacher(teacher_cfg: Any, teacher_meta: dict[str, Any], cfg: Any,
                  data_shape: Sequence[int] | None = None, what: str = "the teacher") -> None:
    """ValueError (one line) unless the run described by (teacher_cfg, teacher_meta) can teach the student of
    config ``cfg`` on data of ``data_shape``: a diffusion or flow model (not a consistency model), of the same
    sample shape, conditioned on labels when the student is, reaching the student's σ_max."""
    if teacher_cfg.objective.prediction == "consistency":
        raise ValueError(f"{what} is a consistency model; distil from a diffusion or flow model (prediction eps, "
                         "x0, v, velocity or edm)")
    shape = _meta_shape(teacher_meta)
    if data_shape is not None and tuple(data_shape) != shape:
        raise ValueError(f"{what} was trained on samples of shape {shape}, the data here have shape "
                         f"{tuple(data_shape)}")
    if cfg.data.class_cond and not teacher_cfg.data.class_cond:
        raise ValueError(f"a class-conditional student needs a class-conditional teacher; {what} is unconditional")
    from ..build import make_path_from

    top = largest_ve_sigma(make_path_from(teacher_cfg))
    if cfg.path.sigma_max > top * (1 + 1e-9):
        raise ValueError(f"path.sigma_max = {cfg.path.sigma_max:g} is beyond the largest noise level σ̃ = {top:g} "
                         f"of {what}; set path.sigma_max <= {top:g}")


def load_teacher(cfg: Any, device: torch.device | str = "cpu", data_shape: Sequence[int] | None = None) -> Denoiser:
    """The trained denoiser (EMA weights, eval mode, no gradients) of the run ``cfg.consistency.teacher``, checked
    against the student config ``cfg`` (and the data's per-sample shape when given) by :func:`check_teacher`."""
    from ..build import load_denoiser

    run = cfg.consistency.teacher
    if not run:
        raise ValueError("consistency.teacher names no run: consistency distillation needs a trained teacher")
    D, meta, tcfg = load_denoiser(run, use_ema=True, device=device)
    check_teacher(tcfg, meta, cfg, data_shape, what=f"teacher {run!r}")
    D.requires_grad_(False)
    return D


def init_reason(cfg: Any, teacher_cfg: Any) -> str | None:
    """None if the teacher's network F can initialise the student's, else why not.

    The student reads F as the consistency parameterisation does, F(c_in(σ̃) y, c_noise(σ̃)); the teacher's x̂_0 is
    c_skip y + c_out F(c_in y, c_noise) only for EDM preconditioning (Karras et al. 2022 Eq. (7)), whose c_in and
    c_noise = 250 ln σ̃ are the consistency model's own (Song et al. 2023 App. C) on any path in the VE frame.
    Then F(·) is a good start (ECT, Geng et al. 2024 §3; CD, Song et al. 2023 §6) and differs from the target only
    through c_skip, c_out near σ_min. Any other prediction (ε, v, velocity, x_0) feeds its network other inputs
    (unscaled x_t, the path's own time): copying its weights would start from an unrelated function. The two
    networks must also be the same architecture (net table, data shape, labels, no learned-variance half), and
    c_in, c_noise are compared numerically on a grid of σ̃ rather than assumed."""
    if teacher_cfg.objective.prediction != "edm":
        return (f"the teacher predicts {teacher_cfg.objective.prediction!r}; only an edm-preconditioned teacher "
                "shares the consistency model's network inputs")
    if teacher_cfg.objective.learn_variance:
        return "the teacher's network also outputs a variance (twice the channels)"
    if teacher_cfg.net != cfg.net:
        return "the student's [net] table differs from the teacher's"
    if teacher_cfg.data.class_cond != cfg.data.class_cond:
        return "one of teacher and student is class-conditional and the other is not"
    if teacher_cfg.objective.sigma_data != cfg.objective.sigma_data:
        return (f"objective.sigma_data differs (teacher {teacher_cfg.objective.sigma_data:g}, student "
                f"{cfg.objective.sigma_data:g}), so c_in differs")
    from ..build import make_param_from, make_path_from

    t_path, s_path = make_path_from(teacher_cfg), make_path_from(cfg)
    t_param, s_param = make_param_from(teacher_cfg), make_param_from(cfg)
    top = min(largest_ve_sigma(t_path), s_path.t_max)
    sig = torch.logspace(math.log10(0.002), math.log10(top), 33, dtype=torch.float64)  # σ̃ grid
    t_t = t_path.t_of_log_snr(-2 * sig.log())
    # F's input scale on y = x/α: c_in(x) · α; time value as given to F
    same_in = torch.allclose(t_param.c_in(t_path, t_t) * t_path.alpha(t_t), s_param.c_in(s_path, sig), rtol=1e-6)
    same_noise = torch.allclose(t_param.c_noise(t_path, t_t).float(), s_param.c_noise(s_path, sig).float(),
                                rtol=1e-5, atol=1e-3)
    if not (same_in and same_noise):
        return "the student's c_in or c_noise differs from the teacher's"
    return None


def init_from_teacher(cfg: Any, net: nn.Module) -> bool:
    """Copy the teacher's EMA weights (run ``cfg.consistency.teacher``) into the freshly built student ``net`` when
    F's inputs and architecture agree (:func:`init_reason` says why that is the condition); otherwise leave the
    fresh initialisation and return False. Call it before the EMA and the optimizer are made from ``net``, and
    never on resume (the checkpoint's weights are the run's)."""
    from ..build import load_denoiser

    run = cfg.consistency.teacher
    if cfg.objective.prediction != "consistency" or cfg.consistency.method not in ("cd", "ect") or not run:
        return False  # only a distilled or tuned consistency model has a teacher to start from
    D, _, tcfg = load_denoiser(run, use_ema=True)  # every check of a loaded checkpoint, EMA weights
    if init_reason(cfg, tcfg) is not None:
        return False
    weights, own = D.net.state_dict(), net.state_dict()
    if set(own) != set(weights) or any(own[k].shape != weights[k].shape for k in own):
        return False  # e.g. another data shape: the tables agree but the layers' sizes do not
    net.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()})
    return True
