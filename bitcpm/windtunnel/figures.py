"""The wind tunnel's pictures: matplotlib without a display, and a finished figure written to its file."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only: reports run on login nodes and in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path, dpi: int = 90, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Lay the figure out (within `rect`, leaving room above for a tall title), write it as PNG, free it."""
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
