"""Networks: a U-Net for images and an MLP for vectors. Both are f(x_t, t, y=None) -> prediction."""

from .mlp import MLP, MLPConfig
from .unet import UNet, UNetConfig

__all__ = ["MLP", "MLPConfig", "UNet", "UNetConfig"]
