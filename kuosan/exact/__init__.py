"""The exact test bed: data whose optimal denoiser, velocity, consistency function and conditionals are closed form.

- ``mixture``: Gaussian mixtures, their exact denoiser E[x_0|x_t], log-densities and the exact PF-ODE solution.
"""

from .mixture import ExactDenoiser, GaussianMixture, curve_cov, gaussian, pf_ode_solve, ring

__all__ = ["ExactDenoiser", "GaussianMixture", "curve_cov", "gaussian", "pf_ode_solve", "ring"]
