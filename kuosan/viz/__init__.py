"""Pictures. Of a run: sample grids and plots (grid.py), the training panels (panels.py). Of diffusion itself, the
figures of `kuosan viz` (each a module computing the arrays behind its picture, then drawing them): a curve
diffusing (curve.py), covariances of diffused data (covariance.py), coloured noise (colour_noise.py), schedules
(schedule.py), 2-D trajectories (trajectory.py), denoising steps (denoise.py); steps.py records a sampler's states,
sources.py reads inputs, render.py writes PNGs, GIFs and .npz.
"""

from .grid import image_grid, save_samples
from .panels import plot_loss

__all__ = ["image_grid", "plot_loss", "save_samples"]
