"""The consistency objective: consistency training (improved CT, Song & Dhariwal 2023), distillation (Song et al.
2023 Alg. 2) and consistency tuning (ECT, Geng et al. 2024), on the VE path x_σ = x_0 + σ z.

Each training step draws a pair of noise levels σ_lo < σ_hi per sample (the objective's time sampler,
``ConsistencyLevels``, which is told the training step: the discretisation follows a curriculum) and one noise z:
  loss = λ·d(f_θ(x_0 + σ_hi z, σ_hi), sg f_θ(x_lo, σ_lo)),   λ = 1/(σ_hi - σ_lo)
                                                             (ect: kuosan.objectives.ect's weight),
  d(a, b) = √(‖a - b‖² + c²) - c   (pseudo-Huber, Song & Dhariwal 2023 §3.3; c = 0.00054·√d by default),
with x_lo = x_0 + σ_lo z (ct, ect) or the teacher's ODE step from (x_0 + σ_hi z, σ_hi) to σ_lo (cd). The target
network is the student itself with the gradient stopped (θ⁻ = θ, no EMA target, as iCT). Both evaluations see the
same dropout masks (ECT's choice): the target is evaluated under a forked RNG, so the student draws the same masks.
Levels: ct and cd use the Karras discretisation σ_1 = σ_min < ... < σ_N = σ_max (ρ = 7), adjacent pairs
(σ_i, σ_{i+1}) drawn from the discrete log-normal of iCT §3.5; ct's N follows the curriculum
N(k) = min(s0·2^⌊k/K'⌋, s1) + 1, K' = ⌊K/(log2⌊s1/s0⌋ + 1)⌋ (iCT §3.4), cd's N is fixed; ect draws
ln σ_hi ~ N(P_mean, P_std²) and takes σ_lo from kuosan.objectives.ect. Pairs are (B, 2) float64 tensors,
columns (σ_hi, σ_lo).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, get_args

import torch
from torch import Tensor

from ..forward import q_sample
from ..parameterisation import Consistency
from ..paths import Path
from .diffusion import LossTerms

Method = Literal["ct", "cd", "ect"]
METHODS: tuple[str, ...] = get_args(Method)
# x_lo = teacher_step(x_hi (B, *D), σ_hi (B,), σ_lo (B,), cond): one ODE step of a teacher (kuosan.families.distill)
TeacherStep = Callable[[Tensor, Tensor, Tensor, "dict[str, Any] | None"], Tensor]
HUBER_SCALE = 0.00054  # c = 0.00054·√d (Song & Dhariwal 2023 §3.3: c = 0.03 for CIFAR-10's d = 3072)


def karras_levels(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """σ_i = (σ_min^{1/ρ} + (i-1)/(N-1)(σ_max^{1/ρ} - σ_min^{1/ρ}))^ρ, i = 1..N (Song et al. 2023 §C / Karras
    et al. 2022 Eq. (5)), ascending (N,) float64 with the ends exact."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"a discretisation needs at least 2 noise levels, got {n!r}")
    if not (0 < sigma_min < sigma_max and math.isfinite(sigma_max)) or not (rho > 0 and math.isfinite(rho)):
        raise ValueError(f"karras levels need 0 < sigma_min < sigma_max (finite) and rho > 0, got {sigma_min}, "
                         f"{sigma_max}, {rho}")
    i = torch.arange(n, dtype=torch.float64) / (n - 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    s = (lo + i * (hi - lo)) ** rho
    s[0], s[-1] = sigma_min, sigma_max
    return s


def curriculum_points(step: int, total_steps: int, s0: int, s1: int) -> int:
    """N(k) = min(s0·2^⌊k/K'⌋, s1) + 1 noise levels at training step k, K' = ⌊K/(log2⌊s1/s0⌋ + 1)⌋
    (Song & Dhariwal 2023 Eq. (8)); K' is at least 1 (a run shorter than the number of doublings doubles every step)."""
    k_prime = max(1, math.floor(total_steps / (math.log2(math.floor(s1 / s0)) + 1)))
    return min(s0 * 2 ** min(step // k_prime, 62), s1) + 1


def level_probs(levels: Tensor, p_mean: float, p_std: float) -> Tensor:
    """p(i) ∝ erf((ln σ_{i+1} - P_mean)/(√2 P_std)) - erf((ln σ_i - P_mean)/(√2 P_std)) over the N - 1 adjacent
    pairs (Song & Dhariwal 2023 §3.5, the discretised log-normal of EDM); (N-1,) float64 summing to 1."""
    cdf = torch.special.erf((levels.log() - p_mean) / (math.sqrt(2) * p_std))
    p = (cdf[1:] - cdf[:-1]).clamp_min(0)
    if not float(p.sum()) > 0:  # every pair far in a tail: erf saturates to ±1; fall back to uniform
        return torch.full_like(p, 1.0 / p.numel())
    return p / p.sum()


def pseudo_huber(a: Tensor, b: Tensor, c: float) -> Tensor:
    """d(a, b) = √(‖a - b‖² + c²) - c per sample, (B, *D) x2 -> (B,) (Song & Dhariwal 2023 Eq. (9));
    c = 0: ‖a - b‖."""
    sq = (a - b).flatten(1).pow(2).sum(1)
    return (sq + c**2).sqrt() - c


def default_huber_c(numel: int) -> float:
    """0.00054·√d for samples of d numbers."""
    return HUBER_SCALE * math.sqrt(numel)


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


@dataclass(frozen=True)
class ConsistencyLevels:
    """The consistency objective's time sampler: ``sample(n, generator, step)`` -> ((n, 2) pairs (σ_hi, σ_lo), None).

    ``curriculum = True`` tells the training loop (kuosan.train.step.draw_batch) to pass the step; step None means
    the last step (the final discretisation: the validation loss uses it, so it is comparable across steps)."""

    method: Method
    sigma_min: float
    sigma_max: float
    total_steps: int  # K = optim.steps
    rho: float = 7.0
    s0: int = 10
    s1: int = 1280
    p_mean: float = -1.1
    p_std: float = 2.0
    cd_steps: int = 18
    ect_cfg: Any = field(default=None, compare=False, repr=False)  # the run's Config, for kuosan.objectives.ect
    kind: str = "consistency"
    discrete: bool = False
    curriculum: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown consistency method {self.method!r}; choose one of {', '.join(METHODS)}")
        if not (0 < self.sigma_min < self.sigma_max and math.isfinite(self.sigma_max)):
            raise ValueError(f"consistency levels need 0 < sigma_min < sigma_max, got {self.sigma_min}, "
                             f"{self.sigma_max}")
        for k in ("total_steps", "s0", "s1"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"consistency {k} must be a positive integer, got {v!r}")
        if self.s0 > self.s1:
            raise ValueError(f"consistency s0 ({self.s0}) must be at most s1 ({self.s1})")
        if isinstance(self.cd_steps, bool) or not isinstance(self.cd_steps, int) or self.cd_steps < 2:
            raise ValueError(f"consistency cd_steps (noise levels) must be an integer >= 2, got {self.cd_steps!r}")
        if not (self.p_std > 0 and math.isfinite(self.p_std) and math.isfinite(self.p_mean)):
            raise ValueError(f"consistency needs a finite p_mean and p_std > 0, got {self.p_mean}, {self.p_std}")
        if self.method == "ect":
            _ect_levels()  # a clear error now, not at the first step

    def _step(self, step: int | None) -> int:
        return self.total_steps - 1 if step is None else int(step)

    def n_points(self, step: int | None = None) -> int:
        """N, the number of Karras noise levels at ``step`` (ct: the curriculum; cd: cd_steps)."""
        if self.method == "cd":
            return self.cd_steps
        return curriculum_points(self._step(step), self.total_steps, self.s0, self.s1)

    def levels(self, step: int | None = None) -> Tensor:
        """σ_1 < ... < σ_N at ``step`` (N,) float64 (ct, cd)."""
        return karras_levels(self.n_points(step), self.sigma_min, self.sigma_max, self.rho)

    def sample(self, n: int, generator: torch.Generator | None = None, step: int | None = None
               ) -> tuple[Tensor, None]:
        """n pairs (n, 2) float64 (σ_hi, σ_lo) on the generator's device; no importance weights."""
        dev = _device(generator)
        if self.method == "ect":
            z = torch.randn(n, generator=generator, dtype=torch.float64, device=dev)
            hi = torch.exp(self.p_mean + self.p_std * z).clamp(self.sigma_min, self.sigma_max)
            lo = _ect_levels()(hi, self._step(step), self.total_steps, self.ect_cfg)
            lo = torch.as_tensor(lo, dtype=torch.float64, device=dev).clamp(min=self.sigma_min)
            return torch.stack([hi, torch.minimum(lo, hi)], 1), None
        s = self.levels(step).to(dev)
        i = torch.multinomial(level_probs(s, self.p_mean, self.p_std), n, replacement=True, generator=generator)
        return torch.stack([s[i + 1], s[i]], 1), None


def _ect_levels() -> Callable[..., Tensor]:
    """kuosan.objectives.ect.ect_levels(σ_t (B,), step, total_steps, cfg) -> σ_r (B,), imported when needed."""
    try:
        from .ect import ect_levels
    except ImportError:
        raise ValueError("consistency method 'ect' needs kuosan.objectives.ect (ect_levels), which this kuosan "
                         "lacks") from None
    return ect_levels


@dataclass(frozen=True)
class ConsistencyObjective:
    """The per-sample consistency loss; call it as ``obj(net_fn, x0, t=pairs, eps=z)`` like the diffusion
    objective (net_fn(x, σ, **cond) is the raw network, NetDenoiser.raw; f = param.to_x0(raw))."""

    path: Path
    param: Consistency
    times: ConsistencyLevels
    huber_c: float = 0.0  # 0: 0.00054·√d
    teacher_step: TeacherStep | None = field(default=None, compare=False, repr=False)  # cd

    def __post_init__(self) -> None:
        if not isinstance(self.param, Consistency):
            raise ValueError(f"the consistency objective trains a consistency parameterisation, got "
                             f"{getattr(self.param, 'name', self.param)!r}")
        self.param.check_path(self.path)
        if abs(self.times.sigma_min - self.param.sigma_min) > 1e-12 * self.param.sigma_min:
            raise ValueError(f"the levels' sigma_min {self.times.sigma_min} differs from the parameterisation's "
                             f"{self.param.sigma_min} (the boundary f(x, σ_min) = x)")
        if not (isinstance(self.huber_c, (int, float)) and math.isfinite(self.huber_c) and self.huber_c >= 0):
            raise ValueError(f"huber_c must be a finite number >= 0, got {self.huber_c!r}")

    def f(self, net_fn: Any, x: Tensor, sigma: Tensor, cond: dict[str, Any] | None) -> Tensor:
        """f_θ(x, σ) = c_skip x + c_out F (B, *D), scored in float32 at least (bf16 under autocast)."""
        out = net_fn(x, sigma, **(cond or {}))[:, :x.shape[1]]
        dt = torch.promote_types(out.dtype, torch.float32)
        return self.param.to_x0(out.to(dt), x.to(dt), self.path, sigma)

    def __call__(self, net_fn: Any, x0: Tensor, *, generator: torch.Generator | None = None, t: Tensor | None = None,
                 eps: Tensor | None = None, cond: dict[str, Any] | None = None) -> LossTerms:
        """Per-sample loss (B,) for data x0 (B, *D); ``t`` (B, 2) pairs (σ_hi, σ_lo) and ``eps`` (B, *D) default to
        draws from ``generator`` (pairs at the final discretisation first, then z)."""
        B = x0.shape[0]
        if t is None:
            t, _ = self.times.sample(B, generator)
        t = torch.as_tensor(t, dtype=torch.float64, device=x0.device)
        if t.shape != (B, 2):
            raise ValueError(f"the consistency objective takes (B, 2) noise-level pairs (σ_hi, σ_lo), got shape "
                             f"{tuple(t.shape)}")
        hi, lo = t[:, 0], t[:, 1]
        if eps is None:
            eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
        x_hi = q_sample(self.path, x0, hi, eps)  # x_0 + σ_hi z
        rng = [x0.device] if x0.device.type == "cuda" else []
        with torch.no_grad():
            if self.times.method == "cd":
                if self.teacher_step is None:
                    raise ValueError("consistency distillation needs a teacher step (build the objective with "
                                     "teacher_step; kuosan.build loads consistency.teacher)")
                with torch.random.fork_rng(devices=rng):  # the teacher leaves the student's dropout stream alone
                    x_lo = self.teacher_step(x_hi, hi, lo, cond)
            else:
                x_lo = q_sample(self.path, x0, lo, eps)  # x_0 + σ_lo z, the same z
            with torch.random.fork_rng(devices=rng):  # the student below draws the same dropout masks
                target = self.f(net_fn, x_lo, lo, cond)  # sg f_θ⁻(x_lo, σ_lo), θ⁻ = θ
        student = self.f(net_fn, x_hi, hi, cond)
        c = self.huber_c if self.huber_c > 0 else default_huber_c(x0[0].numel())
        d = pseudo_huber(student, target.to(student.dtype), c)
        return LossTerms(d * self.weight(hi, lo).to(d.dtype), None, hi, None)

    def weight(self, hi: Tensor, lo: Tensor) -> Tensor:
        """λ (B,) float64: 1/(σ_hi - σ_lo) (iCT; 0 where σ_hi = σ_lo, a zero distance), or ECT's own weight."""
        if self.times.method == "ect":
            from .ect import ect_weight

            return ect_weight(hi, lo, self.param.sigma_data)
        gap = hi - lo
        return torch.where(gap > 0, 1 / gap.clamp_min(1e-300), torch.zeros_like(gap))


def make_consistency_objective(path: Path, param: Consistency, *, method: str = "ct", total_steps: int,
                               rho: float = 7.0, s0: int = 10, s1: int = 1280, p_mean: float = -1.1,
                               p_std: float = 2.0, huber_c: float = 0.0, cd_steps: int = 18,
                               teacher_step: TeacherStep | None = None, ect_cfg: Any = None) -> ConsistencyObjective:
    """A ConsistencyObjective on ``path`` (VE) with levels from σ_min (the parameterisation's) to the path's σ_max."""
    param.check_path(path)
    times = ConsistencyLevels(method, param.sigma_min, float(path.t_max), total_steps, rho=rho, s0=s0, s1=s1,
                              p_mean=p_mean, p_std=p_std, cd_steps=cd_steps, ect_cfg=ect_cfg)
    return ConsistencyObjective(path, param, times, huber_c=huber_c, teacher_step=teacher_step)
