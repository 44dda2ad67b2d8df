"""The sampler registry: one SamplerSpec per name, read by ``sample()``, the CLI, the grid optimiser, the tests and
the benchmarks (no other list of samplers exists). ``register`` adds one (the bespoke solver of
:mod:`kuosan.sampling.tuning` registers itself there).

A sampler is a pure function ``fn(D, x, ts, *, noise=None, cond=None, progress=False, callback=None, **options)``
returning x_0 (see :mod:`kuosan.sampling`; a tensor the callback returns replaces x);
``options`` names the keywords beyond those it takes.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Mapping

from torch import Tensor

from ..paths import Path, f64, ve_sigma
from .common import infinite_noise_at
from .consistency import consistency, default_grid
from .ddpm import ddim, ddpm
from .dpm_solver import dpm_solver_2s, dpmpp
from .edm import HEUN_SIGMA_MAX, euler, heun
from .ode import ode
from .sde import pc, sde
from .unipc import unipc

STANDARD_KEYWORDS = frozenset({"noise", "cond", "progress", "callback"})
# NFE of `steps` steps: (steps, whether the grid starts at σ̃ = ∞, options) -> int, or None for adaptive solvers
NfeFn = Callable[[int, bool, Mapping[str, Any]], "int | None"]


def any_path(path: Path) -> str | None:
    return None


def discrete_only(path: Path) -> str | None:
    if getattr(path, "T", None) is not None:
        return None
    return (f"it is defined on the discrete chain's β table and the path is {path.kind!r} (ddim with eta=1 is the "
            "ancestral posterior step on any path)")


@dataclass(frozen=True)
class SamplerSpec:
    """What the rest of kuosan needs to know about a sampler without running it."""

    name: str
    fn: Callable[..., Tensor]
    deterministic: bool  # no noise beyond x_T (with default options): can be optimised, inverted, compared
    order: int | None  # convergence order (weak order for stochastic samplers); None for adaptive solvers and for
    # consistency sampling (it maps to the endpoint in one evaluation: no discretisation error that steps reduce)
    options: frozenset[str]  # keywords the sampler takes beyond STANDARD_KEYWORDS
    nfe_fn: NfeFn
    refusal: Callable[[Path], str | None] = any_path  # the reason it cannot run on a path, or None
    paths: str = "any"  # the paths it runs on, in words
    summary: str = ""
    # the grid when none is asked for: (D, steps) -> times (steps + 1,); None: make_grid's uniform trailing grid
    default_grid: Callable[[Any, int], Tensor] | None = None
    # the σ̃ above which its first step is first order (saving an evaluation); σ̃ = ∞ always is
    first_order_above: float = math.inf

    def nfe(self, steps: int, path: Path | None = None, *, t0: float | None = None, **options: Any) -> int | None:
        """Network evaluations for ``steps`` steps (None: adaptive); with ``path``, for a grid starting at ``t0``
        (default t_max): Heun, DPM-Solver-2 and PC save evaluations when it starts at σ̃ = ∞ (α = 0)."""
        t0 = (path.t_max if t0 is None else t0) if path is not None else None
        start_inf = path is not None and (infinite_noise_at(path, t0) or
                                          float(ve_sigma(path, f64(t0))) > self.first_order_above)
        return self.nfe_fn(steps, start_inf, options)

    def supports(self, path: Path) -> str | None:
        """None if the sampler runs on ``path``, else the reason it does not."""
        return self.refusal(path)


SAMPLERS: dict[str, SamplerSpec] = {}


def register(spec: SamplerSpec, *, replace: bool = False) -> SamplerSpec:
    """Add ``spec`` to SAMPLERS; its options must be keywords of its function."""
    if spec.name in SAMPLERS and not replace:
        raise ValueError(f"a sampler called {spec.name!r} is already registered")
    params = inspect.signature(spec.fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    missing = sorted((spec.options | STANDARD_KEYWORDS) - set(params)) if not takes_any else []
    if missing:
        raise ValueError(f"sampler {spec.name!r}: its function does not take {', '.join(missing)}")
    SAMPLERS[spec.name] = spec
    return spec


def get_sampler(name: str) -> SamplerSpec:
    """The spec called ``name``, or ValueError listing the registered ones."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def check_options(spec: SamplerSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options to pass to spec.fn: None values dropped (not given); one it does not take -> ValueError."""
    given = {k: v for k, v in options.items() if v is not None}
    for k in given:
        if k not in spec.options:
            takes = f"it takes {', '.join(sorted(spec.options))}" if spec.options else "it takes no options"
            raise ValueError(f"sampler {spec.name!r} does not take option {k!r} ({takes})")
    return given


def _n(steps: int, start_inf: bool, options: Mapping[str, Any]) -> int:
    return steps


def _two_per_step(steps: int, start_inf: bool, options: Mapping[str, Any]) -> int:
    return 2 * steps - 1 - (1 if start_inf and steps >= 2 else 0)


def _pc(steps: int, start_inf: bool, options: Mapping[str, Any]) -> int:
    m = options.get("corrector_steps", 1)
    return steps * (m + 1) - (m if start_inf else 0)


def _adaptive(steps: int, start_inf: bool, options: Mapping[str, Any]) -> None:
    return None


for _spec in (
    SamplerSpec("ddpm", ddpm, False, 1, frozenset({"variance", "clip", "analytic_table"}), _n, discrete_only,
                "discrete chain", "ancestral DDPM (Ho et al. 2020 Alg. 2)"),
    SamplerSpec("ddim", ddim, True, 1, frozenset({"eta", "clip"}), _n,
                summary="DDIM (Song et al. 2021 Eq. (12)); stochastic with eta > 0"),
    SamplerSpec("dpm++2m", partial(dpmpp, order=2), True, 2, frozenset(), _n, summary="DPM-Solver++(2M)"),
    SamplerSpec("dpm++3m", partial(dpmpp, order=3), True, 3, frozenset(), _n, summary="DPM-Solver++(3M)"),
    SamplerSpec("dpm2s", dpm_solver_2s, True, 2, frozenset({"r"}), _two_per_step, summary="DPM-Solver-2 singlestep"),
    SamplerSpec("unipc", partial(unipc, order=2), True, 3, frozenset({"corrector", "variant"}), _n,
                summary="UniPC-2 (UniP-2 + UniC, Zhao et al. 2023)"),
    SamplerSpec("unipc3", partial(unipc, order=3), True, 3, frozenset({"corrector", "variant"}), _n,
                summary="UniPC-3"),
    SamplerSpec("heun", heun, True, 2, frozenset(), _two_per_step, summary="EDM Heun (Karras et al. 2022 Alg. 1)",
                first_order_above=HEUN_SIGMA_MAX),
    SamplerSpec("euler", euler, True, 1, frozenset(), _n, summary="EDM Euler (= DDIM)"),
    SamplerSpec("ode", ode, True, None, frozenset({"rtol", "atol", "method"}), _adaptive,
                summary="adaptive Runge–Kutta on the PF-ODE (Song et al. 2021 Eq. (13))"),
    SamplerSpec("sde", sde, False, 1, frozenset(), _n, summary="Euler–Maruyama on the reverse SDE (Eq. (6))"),
    SamplerSpec("pc", pc, False, 1, frozenset({"snr", "corrector_steps", "predictor"}), _pc,
                summary="predictor–corrector (Song et al. 2021 Alg. 5)"),
    SamplerSpec("consistency", consistency, False, None, frozenset(), _n,
                summary="multistep consistency sampling (Song et al. 2023 Alg. 1); stochastic with steps > 1",
                default_grid=default_grid),
):
    register(_spec)
