"""Explanations: where on the face the model looked.

The methods (attention rollout and its gradient-weighted variant for ViTs, Grad-CAM for
networks with a spatial feature map, SmoothGrad for any network, ``auto`` to pick per
architecture) run on the torch
model; `emovit.EmotionRecognizer.explain` runs them over the pipeline's face crops, and the
faithfulness checks (deletion, model randomisation) say whether a map shows what the model used.

Examples:
    >>> from emovit.explain import METHODS
    >>> METHODS
    ('auto', 'rollout', 'grad-rollout', 'gradcam', 'smoothgrad')
"""

from emovit.explain._faithfulness import (
    DeletionResult,
    RandomisationResult,
    deletion_test,
    randomisation_test,
    randomised_copy,
    spearman,
)
from emovit.explain._methods import (
    CLASS_SPECIFIC,
    GRADCAM_MIN_SIDE,
    METHODS,
    SMOOTHGRAD_SAMPLES,
    SMOOTHGRAD_SIGMA,
    Explainer,
    ExplainMethod,
    gradcam_layer,
    normalise_maps,
    resize_map,
    resolve_method,
)

__all__ = [
    "CLASS_SPECIFIC",
    "GRADCAM_MIN_SIDE",
    "METHODS",
    "SMOOTHGRAD_SAMPLES",
    "SMOOTHGRAD_SIGMA",
    "DeletionResult",
    "ExplainMethod",
    "Explainer",
    "RandomisationResult",
    "deletion_test",
    "gradcam_layer",
    "normalise_maps",
    "randomisation_test",
    "randomised_copy",
    "resize_map",
    "resolve_method",
    "spearman",
]
