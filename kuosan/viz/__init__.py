"""Pictures: sample grids and plots (grid.py), the training-run panels (panels.py), and the `kuosan viz` figures."""

from .grid import image_grid, save_samples
from .panels import plot_loss

__all__ = ["image_grid", "plot_loss", "save_samples"]
