"""kuosan (扩散): denoising diffusion models as one correct, fast system."""

__version__ = "0.1.0"
