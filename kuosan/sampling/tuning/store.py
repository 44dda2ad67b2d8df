"""Optimised grids and bespoke solvers as JSON, tied to the path they were fitted on by its fingerprint.

Format "kuosan-time-grid": version 2 stores {"path": fingerprint, "path_spec": spec, "sampler", "nfe", "grid"
(float64 values, which JSON round-trips exactly), "coeffs" (bespoke only)}. Version 1 (written before paths
existed) stored the discrete schedule's fingerprint under "schedule"; DiscreteVP.fingerprint is the same hash,
so those files still load.
"""

from __future__ import annotations

import json
from pathlib import Path as FilePath
from typing import Any

import torch
from torch import Tensor

from ...paths import Path, fingerprint_matches
from ..grids import check_grid
from .bespoke import COEFF_NAMES, SolverParams, check_coeffs

GRID_FORMAT = "kuosan-time-grid"
VERSION = 2


def save_grid(file: str | FilePath, grid: Tensor, path: Path, sampler_name: str, nfe: int,
              coeffs: dict[str, Any] | None = None) -> None:
    """Write an optimised grid as JSON with the path's fingerprint; ``coeffs`` (a bespoke solver's per-step
    coefficients) are stored alongside under "coeffs"."""
    check_grid(grid, path)
    doc: dict[str, Any] = {"format": GRID_FORMAT, "version": VERSION, "path": path.fingerprint(),
                           "path_spec": path.spec(), "sampler": str(sampler_name), "nfe": int(nfe),
                           "grid": [float(t) for t in torch.as_tensor(grid, dtype=torch.float64)]}
    if coeffs is not None:
        doc["coeffs"] = {str(k): torch.as_tensor(v, dtype=torch.float64).tolist() for k, v in coeffs.items()}
    FilePath(file).write_text(json.dumps(doc, indent=1))


def _read(file: str | FilePath) -> dict[str, Any]:
    try:
        doc = json.loads(FilePath(file).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read an optimised grid from {str(file)!r}: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != GRID_FORMAT or not isinstance(doc.get("grid"), list):
        raise ValueError(f"{str(file)!r} is not a kuosan optimised-grid file")
    return doc


def _made_for(doc: dict[str, Any]) -> tuple[str | None, str]:
    """(fingerprint, description) of the path a document was written for (version 2, or version 1's schedule)."""
    if "path" in doc:
        return doc["path"], f"{doc.get('path_spec')}"
    return doc.get("schedule"), f"schedule {doc.get('schedule_kind')}, T = {doc.get('T')}"


def _load(file: str | FilePath, path: Path) -> tuple[Tensor, dict[str, Any]]:
    doc = _read(file)
    fp, what = _made_for(doc)
    if not fingerprint_matches(path, fp):
        raise ValueError(f"{str(file)!r}: optimised grid was made for another path ({what}, fingerprint {fp}); "
                         f"this path is {path.spec()}, fingerprint {path.fingerprint()}")
    try:
        grid = torch.tensor(doc["grid"], dtype=torch.float64)
        check_grid(grid, path)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{str(file)!r}: {e}") from e
    return grid, doc


def load_grid(file: str | FilePath, path: Path) -> Tensor:
    """Read a grid written by save_grid; ValueError if it was made for another path or is malformed."""
    return _load(file, path)[0]


def save_solver(file: str | FilePath, params: SolverParams, path: Path, nfe: int | None = None) -> None:
    """Write grid and coefficients as one JSON (save_grid's format, with a 'coeffs' entry)."""
    steps = params.ts.numel() - 1
    co = check_coeffs(params.coeffs(), steps)
    save_grid(file, params.ts, path, "bespoke", steps if nfe is None else nfe, coeffs=co)


def load_solver(file: str | FilePath, path: Path) -> SolverParams:
    """Read a solver written by save_solver; ValueError for another path, a plain grid or bad coefficients."""
    ts, doc = _load(file, path)
    if doc.get("sampler") != "bespoke" or not isinstance(doc.get("coeffs"), dict):
        raise ValueError(f"{str(file)!r} holds a plain time grid, not a bespoke solver's coefficients")
    try:
        co = check_coeffs({k: torch.tensor(v, dtype=torch.float64) for k, v in doc["coeffs"].items()}, ts.numel() - 1)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{str(file)!r}: {e}") from e
    return SolverParams(ts, *(co[k] for k in COEFF_NAMES), info={"file": str(file)})
