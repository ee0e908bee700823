"""How far converted (or quantized) features are from the float encoder's, on the same images.

The linear probe standardises every feature to unit spread, so the figure that predicts what a
conversion costs in accuracy is the error in those units (`standardised_mse`); the cosines are
dominated by the few largest features and can look fine while the many small ones are lost
(docs/notes/int8-accuracy.md has the measurements).
"""

import numpy as np


def _cosines(a, b):
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)


def feature_spread(features):
    """|std over images| / |mean| of [N, d] features: near 0, they barely tell images apart."""
    features = np.asarray(features, np.float64)
    return float(np.linalg.norm(features.std(axis=0))
                 / max(np.linalg.norm(features.mean(axis=0)), 1e-12))


def feature_scale(features):
    """Per-feature spread (std over the images) of [N, d] features, floored at 1e-3 of the largest
    so that a constant feature does not divide by zero: the scale the linear probe standardises
    each feature to (`probes.linear_probe_scores` adds 1e-6 instead of a floor). Used by
    `agreement` and as the scale of the QAT distillation loss."""
    spread = np.asarray(features, np.float64).std(axis=0)
    return np.maximum(spread, 1e-3 * max(float(spread.max()), 1e-12))


def agreement(reference, features):
    """Agreement of [N, d] `features` with the `reference` features of the same images:

    - cosine_mean / _min: cosine similarity of each image's two feature vectors;
    - centred_cosine_mean / _min: the same after subtracting the reference's mean feature from
      both (what the export tolerance checks: a large common component keeps the raw cosine
      near 1 while rounding erases every difference between images);
    - feature_spread: of the reference (`feature_spread`);
    - standardised_mse: the mean squared difference with every feature in units of its spread
      over the images (`feature_scale`), the scale the linear probe sees; None for one image;
    - max_abs_diff: the largest absolute difference.
    """
    reference = np.asarray(reference, np.float64)
    features = np.asarray(features, np.float64)
    cosine = _cosines(reference, features)
    mean = reference.mean(axis=0, keepdims=True) if len(reference) > 1 else 0.0
    centred = _cosines(reference - mean, features - mean)
    return {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
            "centred_cosine_mean": float(centred.mean()),
            "centred_cosine_min": float(centred.min()),
            "feature_spread": feature_spread(reference),
            "standardised_mse": (float(np.mean(((features - reference)
                                                / feature_scale(reference)) ** 2))
                                 if len(reference) > 1 else None),
            "max_abs_diff": float(np.max(np.abs(reference - features)))}
