"""A progress bar for fits that take minutes (the issue: a grid fit printed nothing for 50 minutes)."""

from __future__ import annotations

from typing import Any


class _Silent:
    """The bar's interface, doing nothing (progress off)."""

    def update(self, n: int = 1) -> None: ...
    def set_postfix(self, **kw: Any) -> None: ...
    def close(self) -> None: ...


def bar(enabled: bool, total: int, desc: str) -> Any:
    """A tqdm bar on stderr when ``enabled`` (at most one refresh a second), else a silent stand-in."""
    if not enabled:
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, mininterval=1.0, dynamic_ncols=True)
