"""Sampling fitted to one model: optimised time grids (optimise.py), the bespoke solver (bespoke.py, fitted by
fit.py), their JSON files tied to the path's fingerprint (store.py) and fit-or-load for a model (cache.py).

Importing this package registers the ``bespoke`` sampler; SciPy is imported only when a grid is optimised.
"""

from __future__ import annotations

from typing import Any

from ..registry import SamplerSpec, register
from .bespoke import COEFF_NAMES, SolverParams, bespoke, zero_coeffs
from .cache import BESPOKE_CALIB_N, GRID_CALIB_N, bespoke_params, grid_for
from .fit import optimise_solver
from .optimise import METHODS, optimise_grid
from .store import load_grid, load_solver, save_grid, save_solver


def _one_per_step(steps: int, start_inf: bool, options: Any) -> int:
    return steps


register(SamplerSpec("bespoke", bespoke, True, 2, frozenset({"coeffs"}), _one_per_step,
                     summary="bespoke 2M solver with fitted times and coefficients (Shaul et al. 2023); "
                             "coeffs=None is DPM-Solver++(2M)"))

__all__ = ["BESPOKE_CALIB_N", "COEFF_NAMES", "GRID_CALIB_N", "METHODS", "SolverParams", "bespoke", "bespoke_params",
           "grid_for", "load_grid", "load_solver", "optimise_grid", "optimise_solver", "save_grid", "save_solver",
           "zero_coeffs"]
