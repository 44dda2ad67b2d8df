"""Sample quality without downloads: kuosan's own feature network (:mod:`.features`; the network itself in
:mod:`.feature_net`), Fréchet distance (:mod:`.fd`), KID (:mod:`.kid`), precision/recall/density/coverage
(:mod:`.prdc`), class statistics (:mod:`.classes`), memorisation (:mod:`.memorisation`), exact metrics where the
density is known (:mod:`.exact`), and the report with the real-vs-real baseline beside every figure
(:mod:`.report`).

The feature-space figures compare models on the same data; they are not comparable with published FIDs.
"""

from __future__ import annotations

from .classes import ClassStats, class_stats
from .exact import ModeWeights, energy_distance, known_mixture, mean_nll, mmd, mode_weights, w2
from .fd import FDResult, check_sample_count, frechet_distance, frechet_distance_gaussians, gaussian_stats
from .features import FeatureConfig, Features, default_cache_dir, feature_dim, feature_extractor
from .kid import KIDResult, kid
from .memorisation import NEAR_COPY_RATIO, Memorisation, memorisation, save_worst_png
from .prdc import PRDCResult, prdc
from .report import NOTE, evaluate, format_table, to_json

__all__ = ["NEAR_COPY_RATIO", "NOTE", "ClassStats", "FDResult", "FeatureConfig", "Features", "KIDResult",
           "Memorisation", "ModeWeights", "PRDCResult", "check_sample_count", "class_stats", "default_cache_dir",
           "energy_distance", "evaluate", "feature_dim", "feature_extractor", "format_table", "frechet_distance",
           "frechet_distance_gaussians", "gaussian_stats", "kid", "known_mixture", "mean_nll", "memorisation",
           "mmd", "mode_weights", "prdc", "save_worst_png", "to_json", "w2"]
