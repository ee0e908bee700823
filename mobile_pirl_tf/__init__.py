"""Mobile-PIRL: PIRL pretraining of mobile backbones in TensorFlow / Keras 3.

One sub-package a layer, one concept a module; a layer imports only the layers below it
(`tests/test_layers.py` keeps the rules):

- `core` (no TensorFlow): `config` (every tool's settings as a dataclass, and the names they
  accept), `cli` (flags generated from those dataclasses, --help, one-line errors; entry points
  only), `output` (the tools' own lines, not the frameworks'), `records` (atomic writes of
  JSON, CSV and Markdown records), `progress` (progress of long steps), `errors`.
- `data` (core): `images` (which files are images, decoding), `sources` (unlabelled sources),
  `labelled` (labelled splits), `augment` (seeded augmentation ops), `transforms` (every
  pretext transformation and their compositions), `views` (the two PIRL views), `pipeline`
  (the tf.data pretraining pipeline).
- `models` (core): `backbones` (the zoo, `weights=None`), `mbconv`, `mnasnet`,
  `efficientnet_lite` (the networks keras.applications lacks), `heads` (f and g),
  `memory_bank`, `losses` (NCE, InfoNCE), `pirl` (the `keras.Model` and its `train_step`),
  `batchnorm` (re-estimating batch-norm statistics, used by training, evaluation and export).
- `training` (core, data, models): `fit` (`train`: the model, checkpoints, `model.fit`),
  `run_folder` (lock, configuration, leftovers), `finish` (the encoder and run.json),
  `callbacks` (the per-epoch checkpoint), `cluster` (the tf.distribute strategy).
- `evaluation` (core, data, models): `features` (cached frozen features), `probes` (linear
  probe, kNN), `baselines` (random-init and supervised encoders), `finetune` (few labels),
  `monitor` (the kNN monitor handed to training).
- `deployment` (core, data, models, evaluation): `tflite` (LiteRT conversion, host inference
  and latency), `agreement`, `export` (the export and its report), `complexity` (Table I),
  `qat` (the only tf_keras / tfmot user).
- `study` (anything; nothing imports it): the proposal's experiments A-D and the sweep.
"""

from mobile_pirl_tf.core.errors import UsageError  # noqa: F401 - re-exported for users

__version__ = "0.3.0"
