"""Guidance: Denoiser -> Denoiser wrappers that steer any sampler on any path towards a class or away from a weaker
model — classifier-free guidance with an optional λ interval (:mod:`.cfg`, :mod:`.combine`), autoguidance
(:mod:`.autoguidance`), classifier guidance (:mod:`.classifier`) with its noisy classifier's training and storage
(:mod:`.train_classifier`, :mod:`.store`); :func:`guide` builds any of them by name (:mod:`.build`).

Scales: cfg and auto use w with w = 1 unguided (diffusers' guidance_scale; Ho & Salimans' w is w - 1); classifier
guidance uses Dhariwal & Nichol's s with s = 0 unguided and s = 1 the exact posterior with an exact classifier.
"""

from .autoguidance import GuideMismatchError, autoguidance, check_same_path
from .build import GUIDANCE_KINDS, UNGUIDED_SCALE, GuidanceKind, guide
from .cfg import classifier_free
from .classifier import ClassifierGuided, NoisyClassifier, TimeClassifier, classifier_guidance, grad_log_prob
from .combine import Guided, Interval, check_interval, check_scale, in_interval
from .store import classifier_dir, load_classifier, save_classifier
from .train_classifier import ClassifierTraining, accuracy_by_noise, classifier_times, train_classifier

__all__ = ["GUIDANCE_KINDS", "UNGUIDED_SCALE", "ClassifierGuided", "ClassifierTraining", "GuidanceKind",
           "GuideMismatchError", "Guided", "Interval", "NoisyClassifier", "TimeClassifier", "accuracy_by_noise",
           "autoguidance", "check_interval", "check_same_path", "check_scale", "classifier_dir", "classifier_free",
           "classifier_guidance", "classifier_times", "grad_log_prob", "guide", "in_interval", "load_classifier",
           "save_classifier", "train_classifier"]
