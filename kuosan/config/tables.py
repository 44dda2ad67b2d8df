"""The config's tables as dataclasses (one per TOML table, each field with its help text) and KEYS, the
description of every "table.key" that readers, the CLI and the checks use."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args, get_origin, get_type_hints

PathKind = Literal["discrete_vp", "vp_cosine", "vp_linear", "ve", "flow"]
Schedule = Literal["linear", "scaled_linear", "cosine", "sigmoid"]
ModelKind = Literal["auto", "unet", "mlp"]
Prediction = Literal["eps", "x0", "v", "velocity", "edm", "consistency"]
ConsistencyMethod = Literal["ct", "cd", "ect"]
LossType = Literal["l2", "l1", "huber"]
Weighting = Literal["none", "vlb", "min_snr", "edm", "flow", "sigmoid"]
TimeSampling = Literal["auto", "uniform_discrete", "uniform", "logit_normal", "log_normal", "importance", "t_max"]
Precision = Literal["auto", "fp32", "bf16"]
CompileMode = Literal["off", "default", "reduce-overhead"]


class ConfigError(ValueError):
    """A bad configuration value, table or key; the CLI prints it as one line."""


def _f(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    name: str = _f("digits", "built-in name (digits, mnist5k, moons, swissroll, ring, curves) or a path")
    n: int | None = _f(None, "use at most this many examples (a seeded random subset)")
    val_fraction: float = _f(0.05, "share of the data held out for the validation loss")
    class_cond: bool = _f(False, "train a class-conditional model (labels needed) with label dropout")
    p_uncond: float = _f(0.1, "probability of the null label, for classifier-free guidance")


@dataclass
class PathConfig:
    kind: PathKind = _f("discrete_vp", "the Gaussian path x_t = α(t) x_0 + σ(t) ε")
    schedule: Schedule = _f("cosine", "discrete_vp: the β table")
    T: int = _f(1000, "discrete_vp: number of diffusion steps")
    zero_terminal_snr: bool = _f(False, "discrete_vp: rescale to ᾱ_T = 0 (Lin et al. 2024; needs v/x0/edm)")
    beta_start: float | None = _f(None, "discrete_vp linear/scaled_linear: β_1 (default 1e-4 / 0.00085)")
    beta_end: float | None = _f(None, "discrete_vp linear/scaled_linear: β_T (default 0.02 / 0.012)")
    cosine_s: float | None = _f(None, "cosine schedule / vp_cosine: the offset s (default 0.008)")
    t_max: float | None = _f(None, "vp_cosine, vp_linear: the noisiest time (default 1)")
    beta_min: float = _f(0.1, "vp_linear: β(0)")
    beta_max: float = _f(20.0, "vp_linear: β(1)")
    sigma_max: float = _f(80.0, "ve: the largest noise level σ_max")


# which [path] keys each kind takes (the others must keep their defaults)
PATH_KEYS: dict[str, tuple[str, ...]] = {
    "discrete_vp": ("schedule", "T", "zero_terminal_snr", "beta_start", "beta_end", "cosine_s"),
    "vp_cosine": ("cosine_s", "t_max"), "vp_linear": ("beta_min", "beta_max", "t_max"), "ve": ("sigma_max",),
    "flow": ()}


@dataclass
class NetConfig:
    model: ModelKind = _f("auto", "auto: unet for images, mlp for vectors")
    channels: int = _f(32, "unet: base width")
    channel_mult: tuple[int, ...] = _f((1, 2), "unet: width multipliers per level")
    num_res_blocks: int = _f(1, "unet: residual blocks per level")
    attn_resolutions: tuple[int, ...] = _f((), "unet: resolutions with self-attention")
    dropout: float = _f(0.0, "dropout probability")
    mlp_hidden: int = _f(256, "mlp: hidden width")
    mlp_depth: int = _f(4, "mlp: residual blocks")


@dataclass
class ObjectiveConfig:
    prediction: Prediction = _f("v", "what the network predicts (v with the cosine schedule: well-conditioned at "
                                     "t = T); consistency: a consistency model (the [consistency] table, path.kind = "
                                     "ve)")
    sigma_data: float = _f(0.5, "edm prediction and weighting, consistency prediction: the data's standard deviation "
                                "σ_d")
    loss: LossType = _f("l2", "distance between the network output and its target")
    weighting: Weighting = _f("none", "w(λ) on the ε-MSE (Kingma & Gao 2023)")
    min_snr_gamma: float = _f(5.0, "min_snr weighting: γ")
    sigmoid_bias: float = _f(0.0, "sigmoid weighting: the bias b of w = sigmoid(b - λ)")
    time_sampling: TimeSampling = _f("auto", "how t is drawn (auto: uniform_discrete on discrete_vp, log_normal on "
                                             "ve, uniform otherwise; t_max: only the noisiest time, the one-step "
                                             "distillation of a reflowed flow)")
    time_mean: float | None = _f(None, "logit_normal: mean of logit(t/t_max) (default 0); log_normal: P_mean of "
                                       "ln σ̃ (default -1.2)")
    time_std: float | None = _f(None, "logit_normal: its std (default 1); log_normal: P_std (default 1.2)")
    learn_variance: bool = _f(False, "improved DDPM: the network also outputs the variance interpolation v")
    hybrid_lambda: float = _f(0.001, "weight of L_vlb in the hybrid loss (with learn_variance)")


@dataclass
class ConsistencyConfig:
    sigma_min: float = _f(0.002, "σ_min, where f(x, σ_min) = x (the boundary condition, Song et al. 2023)")
    rho: float = _f(7.0, "ct, cd: ρ of the Karras discretisation σ_1 = σ_min < ... < σ_N = σ_max")
    s0: int = _f(10, "ct: initial discretisation steps of the curriculum N(k) = min(s0·2^⌊k/K'⌋, s1) + 1 "
                     "(Song & Dhariwal 2023 §3.4)")
    s1: int = _f(1280, "ct: final discretisation steps of the curriculum")
    p_mean: float = _f(-1.1, "mean of ln σ of the (discrete) log-normal noise-level distribution")
    p_std: float = _f(2.0, "std of ln σ of the noise-level distribution")
    huber_c: float = _f(0.0, "pseudo-Huber c of the distance √(‖a-b‖² + c²) - c "
                             "(0: 0.00054·√d, d the data size)")
    method: ConsistencyMethod = _f("ct", "ct: consistency training (iCT, Song & Dhariwal 2023); cd: distillation from "
                                         "a teacher run (Song et al. 2023); ect: consistency tuning (Geng et al. 2024)")
    teacher: str = _f("", "cd: the teacher run (its ODE steps give the targets); ect: the run whose weights "
                          "initialise the model")
    teacher_sampler: str = _f("heun", "cd: the deterministic sampler whose one step from σ_{i+1} to σ_i is the "
                                      "teacher's ODE step")
    cd_steps: int = _f(18, "cd: the fixed number N of Karras noise levels σ_1..σ_N (N - 1 intervals; Song et al. "
                           "2023 used 18 on CIFAR-10)")

    ect_q: float = _f(2.0, "ect: Δσ = σ_t - σ_r shrinks by q each stage (Geng et al. 2024's mapping "
                           "r/t = 1 - q^-a n(t))")
    ect_k: float = _f(8.0, "ect: k of n(t) = 1 + k·sigmoid(-b t)")
    ect_b: float = _f(1.0, "ect: b of n(t) = 1 + k·sigmoid(-b t)")
    ect_stages: int = _f(8, "ect: the number of stages a over the run")


# which [consistency] keys each method takes (the others must keep their defaults)
CONSISTENCY_KEYS: dict[str, tuple[str, ...]] = {
    "ct": ("sigma_min", "rho", "s0", "s1", "p_mean", "p_std", "huber_c"),
    "cd": ("sigma_min", "rho", "p_mean", "p_std", "huber_c", "teacher", "teacher_sampler", "cd_steps"),
    "ect": ("sigma_min", "p_mean", "p_std", "huber_c", "teacher", "ect_q", "ect_k", "ect_b", "ect_stages")}


@dataclass
class OptimConfig:
    steps: int = _f(1000, "training steps")
    batch_size: int = _f(128, "global batch, split over DDP processes")
    lr: float = _f(3e-3, "peak learning rate (AdamW)")
    min_lr: float = _f(1e-4, "learning rate at the end of the cosine decay")
    warmup: int = _f(100, "linear warm-up steps")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    betas: tuple[float, float] = _f((0.9, 0.95), "AdamW's (β1, β2), each in [0, 1): decay rates of the gradient's "
                                                   "first and second moment estimates (β2 was 0.999 until "
                                                   "2026-11-24 20:30)")
    grad_clip: float = _f(1.0, "clip the gradient norm to this (0 disables)")
    ema_decay: float = _f(0.99, "EMA decay (short runs: a ~100-step horizon)")
    ema_warmup: bool = _f(True, "warm the EMA decay up as min(d, (1+n)/(10+n))")


@dataclass
class LogConfig:
    out: str = _f("", "run folder (default runs/<data>-<time>)")
    log_every: int = _f(50, "steps between log.csv rows")
    val_every: int = _f(500, "steps between validation losses")
    sample_every: int = _f(0, "steps between preview grids (0: only at the end)")
    ckpt_every: int = _f(500, "steps between checkpoints")
    n_samples: int = _f(64, "samples in a preview")
    sample_steps: int = _f(50, "DDIM steps for previews (a consistency model: consistency sampling, at most 2 "
                               "steps, on its default noise levels)")
    tensorboard: bool = _f(False, "also write a TensorBoard log (loss, learning rate, gradient norm, validation loss) "
                                  "in the run folder's tb/ (needs the tensorboard extra)")


@dataclass
class RunConfig:
    seed: int = _f(0, "seed of the weights, the data split and every step's randomness")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    threads: int = _f(0, "torch intra-op threads (0: torch's default)")
    precision: Precision = _f("auto", "fp32, bf16 (autocast) or auto (bf16 where it is fast)")
    compile: CompileMode = _f("off", "torch.compile the training network: default (inductor's fused kernels) or "
                                     "reduce-overhead (inductor + CUDA graphs, CUDA only: for small networks, whose "
                                     "steps are kernel-launch-bound on a GPU)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    path: PathConfig = field(default_factory=PathConfig)
    net: NetConfig = field(default_factory=NetConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    consistency: ConsistencyConfig = field(default_factory=ConsistencyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    log: LogConfig = field(default_factory=LogConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> "Config":
        """Raise ConfigError naming the first bad value; return self."""
        from .checks import check

        check(self)
        return self


TABLES: dict[str, type] = {f.name: f.default_factory for f in fields(Config)}  # type: ignore[misc]


@dataclass(frozen=True)
class KeySpec:
    key: str  # "net.channels"
    table: str
    name: str
    type: Any  # the annotation, e.g. int, bool, tuple[int, ...], Literal[...], int | None
    default: Any
    choices: tuple[str, ...] | None  # the allowed values of a mode (a Literal)
    help: str


def _keys() -> dict[str, KeySpec]:
    out = {}
    for table, cls in TABLES.items():
        hints = get_type_hints(cls)
        for f in fields(cls):
            hint = hints[f.name]
            choices = get_args(hint) if get_origin(hint) is Literal else None
            out[f"{table}.{f.name}"] = KeySpec(f"{table}.{f.name}", table, f.name, hint, f.default, choices,
                                               f.metadata.get("help", ""))
    return out


KEYS: dict[str, KeySpec] = _keys()


def path_kwargs(p: PathConfig) -> dict[str, Any]:
    """The keyword arguments of ``kuosan.paths.make_path(p.kind, **kw)`` (unset optional keys left to the path)."""
    if p.kind == "discrete_vp":
        kw: dict[str, Any] = {"schedule": p.schedule, "T": p.T, "zero_terminal_snr": p.zero_terminal_snr}
        extra = {"beta_start": p.beta_start, "beta_end": p.beta_end, "s": p.cosine_s}
    elif p.kind == "vp_cosine":
        kw, extra = {}, {"s": p.cosine_s, "t_max": p.t_max}
    elif p.kind == "vp_linear":
        kw, extra = {"beta_min": p.beta_min, "beta_max": p.beta_max}, {"t_max": p.t_max}
    elif p.kind == "ve":
        kw, extra = {"sigma_max": p.sigma_max}, {}
    else:
        kw, extra = {}, {}
    return {**kw, **{k: v for k, v in extra.items() if v is not None}}
