"""Mobile-PIRL: PIRL pretraining of mobile backbones in TensorFlow / Keras 3.

One module per concept:

- configuration (free of TensorFlow): `config` (every tool's settings as a dataclass, and the
  names they accept), `cli` (flags generated from those dataclasses, --help, one-line errors).
- networks: `backbones` (the zoo as pooled feature extractors, `weights=None`; the encoder),
  `mbconv`, `mnasnet`, `efficientnet_lite` (the networks keras.applications lacks),
  `complexity` (the proposal's Table I: parameters, graph-counted multiply-adds, latency).
- data: `data` (unlabelled sources and labelled splits), `augment` (seeded augmentation ops),
  `views` (the image view v_I and the training element), `transforms` (every pretext
  transformation t, the jigsaw included, and their compositions), `pipeline` (the tf.data
  pretraining pipeline).
- PIRL: `heads` (projection heads f and g), `memory_bank` (bank and negative sampling),
  `losses` (NCE, InfoNCE), `pirl` (the `keras.Model` with its custom `train_step`),
  `training` (checkpoint / resume, `model.fit`), `cluster` (the tf.distribute strategy of
  `--strategy`, sharded input, who writes the run), `callbacks` (per-epoch checkpoint,
  kNN monitor), `sweep` (the contingency sweep over transformation pairs), `study` (the
  proposal's experiments A-D: successive halving over cells, seeds for the finalists, the cost
  model and plan), `study_report` (intervals, verdicts, heat-map, Pareto plot, REPORT.md).
- evaluation: `batchnorm` (re-estimating batch-norm statistics), `features` (cached frozen
  features), `probes` (linear probe, kNN), `baselines` (random-init and supervised encoders).
- deployment: `tflite` (conversion to LiteRT variants, host inference and latency),
  `agreement` (converted vs float features), `deploy` (the export and its report), `qat`
  (quantization-aware training: the only module using tf_keras and tfmot).
"""

__version__ = "0.2.0"


class UsageError(ValueError):
    """A bad flag, path or data set: the message is one actionable line for the user."""
