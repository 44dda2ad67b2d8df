"""The exact test bed: data whose optimal denoiser, velocity, consistency function and conditionals are closed form.

- ``mixture``: Gaussian mixtures, their exact denoiser E[x_0|x_t], log-densities and the exact PF-ODE solution.
- ``flow``: the flow-matching velocity E[x_1 - x_0 | x_t] and the straightness of 1-rectified flow.
- ``consistency``: the consistency function f(x, σ̃) (the PF-ODE endpoint at σ_min).
- ``conditional``: a class-labelled mixture: E[x_0 | x_t, y], the exact noisy classifier p(y | x_t).
- ``inpainting``: the law of the missing coordinates given the known ones, and inpainting methods' errors.
"""

from .mixture import ExactDenoiser, GaussianMixture, curve_cov, gaussian, pf_ode_solve, ring
from .flow import ExactVelocity, Straightness, exact_straightness
from .consistency import ExactConsistency

__all__ = ["ExactDenoiser", "GaussianMixture", "curve_cov", "gaussian", "pf_ode_solve", "ring"]
__all__ += ["ExactVelocity", "Straightness", "exact_straightness"]
__all__ += ["ExactConsistency"]
from .conditional import ConditionalExactDenoiser, ExactClassifier, LabelledMixture  # noqa: E402
__all__ += ["ConditionalExactDenoiser", "ExactClassifier", "LabelledMixture"]
from .inpainting import (InpaintingError, gaussian_conditional, inpainting_error, inpainting_errors,  # noqa: E402
                         missing_given_known)
__all__ += ["InpaintingError", "gaussian_conditional", "inpainting_error", "inpainting_errors", "missing_given_known"]
