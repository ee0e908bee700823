"""Export a pretrained encoder to TFLite (LiteRT): float32, float16, dynamic-range, int8 and
quantization-aware-trained int8, with a report of size, agreement, accuracy and latency.

    python export/to_tflite.py --model_dir=runs/pirl
    python export/to_tflite.py --encoder=PATH/encoder.keras --backbone=mobilenetv2 \\
        --data_dir=IMAGES --variants=float32,int8 --eval_data_dir=LABELLED

Writes <output_dir>/<variant>.tflite and report.json (output_dir defaults to MODEL_DIR/export,
or export/ beside --encoder). With a --model_dir, the backbone and the data flags (for int8
calibration and QAT) default to the run's config.json. See mobile_pirl_tf/deploy.py for what
the report holds and the tolerances that make an export fail.
"""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mobile_pirl_tf.core import cli, records  # noqa: E402
from mobile_pirl_tf.core.errors import UsageError  # noqa: E402 - TensorFlow is imported in main
from mobile_pirl_tf.core.export_config import ExportConfig  # noqa: E402 - TensorFlow is imported in main

cli.define_flags(ExportConfig)


def _run_config(model_dir):
    """The config.json of the train.py run in model_dir ({} when there is none)."""
    return records.read_json(os.path.join(model_dir, "config.json"), {}) if model_dir else {}


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.WARNING)
    cfg = cli.config_from_flags(ExportConfig).validate()
    from mobile_pirl_tf.data import labelled, sources
    from mobile_pirl_tf.deployment import export as deploy
    from mobile_pirl_tf.models import backbones

    encoder, path = backbones.load_encoder(cfg.model_dir, cfg.encoder)
    cfg = cfg.with_run_defaults(_run_config(cfg.model_dir or os.path.dirname(path))).validate()
    out_dir = cfg.output_dir or os.path.join(os.path.dirname(os.path.abspath(path)), "export")
    existing = [f"{v}.tflite" for v in cfg.variants
                if os.path.exists(os.path.join(out_dir, f"{v}.tflite"))]
    if os.path.exists(os.path.join(out_dir, "report.json")):
        existing.append("report.json")
    if existing and not cfg.overwrite:
        raise UsageError(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite "
                         "to replace them or --output_dir=NEW")
    source = sources.make_source(cfg.dataset, cfg.data_dir, cfg.tfds_data_dir, cfg.tfds_manual_dir)
    probe_splits = labelled.folder_splits(cfg.eval_data_dir) if cfg.eval_data_dir else None
    try:
        deploy.export_encoder(encoder, out_dir, source, cfg, probe_splits)
    except deploy.ExportMismatch as e:
        cli.fail(e)
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    cli.run(main, __doc__)
