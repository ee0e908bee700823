"""Mobile-PIRL: PIRL pretraining of mobile backbones in TensorFlow / Keras 3.

One module per concept:

- `backbones`: the backbone zoo as feature extractors, `weights=None`, global pooling;
  `mbconv`, `mnasnet`, `efficientnet_lite`: the networks keras.applications lacks;
  `models`: the comparison table (parameters, graph-counted multiply-adds, latency).
- `views`: the image view v_I and the jigsaw view v_I^t, as tf.data-friendly TF ops;
  `transforms`: every pretext transformation and their compositions; `sweep`: the
  contingency sweep over transformation pairs.
- `heads`: the projection heads f (image) and g (jigsaw).
- `memory_bank`: the per-example memory bank and negative sampling.
- `losses`: NCE and InfoNCE on memory-bank logits.
- `pirl`: the PIRL `keras.Model` with its custom `train_step`.
- `data`: image sources (folders of images, TFDS) and the input pipeline.
- `training`: configuration, checkpoint/resume, `model.fit` under `tf.distribute`;
  `train_flags`: its command-line flags.
- `evaluation`, `baselines`: linear probe / kNN of frozen encoders, random and supervised.
- `tflite`, `export`: conversion to LiteRT variants, agreement, latency and the export report;
  `qat`: quantization-aware training (the only module using tf_keras and tfmot).
"""

__version__ = "0.1.0"


class UsageError(ValueError):
    """A bad flag, path or data set: the message is one actionable line for the user."""
