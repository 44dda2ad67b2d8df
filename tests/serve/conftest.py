"""Fixtures of the explorer-page tests: tiny trained runs (an MLP on the Gaussian-process curves, a class-conditional
MLP on moons, an 8-channel U-Net on digits; seconds each) and a secret file outside them."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import train_tiny


@pytest.fixture(scope="session")
def curves_run(tmp_path_factory) -> Path:
    """A run on the Gaussian-process curves (64-dim vectors, whose Σ_0 is known in closed form),
    default discrete VP path."""
    return train_tiny(tmp_path_factory.mktemp("serve") / "curves", data__name="curves")


@pytest.fixture(scope="session")
def moons_run(tmp_path_factory) -> Path:
    """A class-conditional moons run (2 classes) on the flow path."""
    return train_tiny(tmp_path_factory.mktemp("serve") / "moons", data__name="moons", data__class_cond=True,
                      path__kind="flow", objective__prediction="velocity")


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory) -> Path:
    """An 8×8 digits run (images: a picture grid, patch covariances)."""
    return train_tiny(tmp_path_factory.mktemp("serve") / "digits", data__name="digits")


@pytest.fixture(scope="session")
def secret(tmp_path_factory) -> Path:
    """A file outside every run folder, which the page must never serve."""
    p = tmp_path_factory.mktemp("outside") / "secret.txt"
    p.write_text("kuosan-secret-4d1f")
    return p
