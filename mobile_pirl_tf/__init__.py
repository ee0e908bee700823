"""Mobile-PIRL: PIRL pretraining of mobile backbones in TensorFlow / Keras 3.

One module per concept:

- `backbones`: keras.applications feature extractors, `weights=None`, global pooling.
- `views`: the image view v_I and the jigsaw view v_I^t, as tf.data-friendly TF ops.
- `heads`: the projection heads f (image) and g (jigsaw).
- `memory_bank`: the per-example memory bank and negative sampling.
- `losses`: NCE and InfoNCE on memory-bank logits.
- `pirl`: the PIRL `keras.Model` with its custom `train_step`.
- `data`: image sources (folders of images, TFDS) and the input pipeline.
- `training`: configuration, checkpoint/resume, `model.fit` under `tf.distribute`.
"""

__version__ = "0.1.0"


class UsageError(ValueError):
    """A bad flag, path or data set: the message is one actionable line for the user."""
