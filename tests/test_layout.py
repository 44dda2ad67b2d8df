"""The code's layout rules, checked: one concept per module of at most 300 lines (kuosan/), and no line over 120
characters in the package, its tests and its benchmarks."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES, MAX_LINE = 300, 120


def _files(*folders: str) -> list[Path]:
    return sorted(p for d in folders for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def test_the_layout_finds_the_code() -> None:
    assert len(_files("kuosan")) > 50 and (ROOT / "kuosan" / "train" / "loop.py") in _files("kuosan")


@pytest.mark.parametrize("path", _files("kuosan"), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_are_short(path: Path) -> None:
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {n} lines: split the concept"


def test_no_line_over_120_characters() -> None:
    long = [f"{p.relative_to(ROOT)}:{i}" for p in _files("kuosan", "tests", "benchmarks")
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if len(line) > MAX_LINE]
    assert not long, f"lines over {MAX_LINE} characters: {long}"
