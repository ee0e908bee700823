"""Export a pretrained encoder to TFLite (LiteRT): float32, float16, dynamic-range, int8 and
quantization-aware-trained int8, with a report of size, agreement, accuracy and latency.

    python export/to_tflite.py --model_dir=runs/pirl
    python export/to_tflite.py --encoder=PATH/encoder.keras --backbone=mobilenetv2 \\
        --data_dir=IMAGES --variants=float32,int8 --eval_data_dir=LABELLED

Writes <output_dir>/<variant>.tflite and report.json (output_dir defaults to MODEL_DIR/export,
or export/ beside --encoder). With a --model_dir, the backbone and the data flags (for int8
calibration and QAT) default to the run's config.json. See mobile_pirl_tf/export.py for what
the report holds and the tolerances that make an export fail.
"""

import json
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from mobile_pirl_tf import UsageError, backbones, data, evaluation, export, tflite  # noqa: E402

flags.DEFINE_string("model_dir", None, "A train.py run folder (holds encoder.keras, config.json).")
flags.DEFINE_string("encoder", None, "An encoder .keras file (instead of --model_dir).")
flags.DEFINE_string("backbone", None, "Backbone of the encoder (default: from config.json); "
                    "needed by qat_int8.")
flags.DEFINE_float("width", None, "Width multiplier of the backbone (default: config.json or 1).")
flags.DEFINE_list("variants", list(tflite.VARIANTS), "Variants to write: "
                  + ", ".join(tflite.VARIANTS) + ".")
flags.DEFINE_string("output_dir", None, "Where the .tflite files and report.json go.")
flags.DEFINE_bool("overwrite", False, "Replace .tflite files / report.json already there.")
flags.DEFINE_string("data_dir", None, "Images for calibration, QAT and agreement (default: the "
                    "run's --data_dir / --dataset).")
flags.DEFINE_string("dataset", None, "TFDS data set for those images (default: the run's).")
flags.DEFINE_string("tfds_data_dir", None, "Where prepared TFDS data sets are.")
flags.DEFINE_integer("calibration_images", 256, "int8 calibration (and QAT) images (>= 200).")
flags.DEFINE_integer("agreement_images", 100, "Held-out images for the agreement check.")
flags.DEFINE_enum("int8_io", "uint8", ["uint8", "int8"], "Input/output type of the int8 files.")
flags.DEFINE_integer("qat_images", export.QAT_IMAGES, "Unlabelled images for QAT's feature "
                     "distillation (besides the calibration images; disjoint from the agreement "
                     "images).")
flags.DEFINE_integer("qat_epochs", export.QAT_EPOCHS,
                     "Feature-distillation epochs of quantization-aware training; 0 converts the "
                     "fake-quantized model with its calibrated ranges and no fine-tuning.",
                     lower_bound=0)
flags.DEFINE_float("qat_learning_rate", export.QAT_LEARNING_RATE,
                   "Adam learning rate of QAT (cosine-decayed to 0).")
flags.DEFINE_string("eval_data_dir", None, "Labelled folder (train/, test/) for the linear "
                    "probe on each variant's features (optional).")
flags.DEFINE_integer("latency_runs", 50, "Timed invokes per thread count (after warm-up).")
flags.DEFINE_list("threads", ["1", "2"], "LiteRT thread counts to time.")
flags.DEFINE_integer("seed", 0, "Seed of the image samples and QAT.")
flags.DEFINE_integer("recalibrate_bn_images", 0, "First re-estimate the encoder's batch-norm "
                     "statistics on this many images of the data flags (the encoder file is not "
                     "changed); for a short run whose statistics have not settled.")
FLAGS = flags.FLAGS


def _run_config(model_dir):
    path = os.path.join(model_dir or "", "config.json")
    if model_dir and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.getLogger().setLevel(logging.WARNING)

    try:
        if not FLAGS.model_dir and not FLAGS.encoder:
            raise UsageError("pass --model_dir=RUN (a train.py run) or --encoder=PATH/encoder.keras")
        unknown = [v for v in FLAGS.variants if v not in tflite.VARIANTS]
        if unknown:
            raise UsageError(f"unknown --variants value {unknown[0]!r}; valid: "
                             f"{', '.join(tflite.VARIANTS)}")
        encoder, path = evaluation.load_encoder(FLAGS.model_dir, FLAGS.encoder)
        config = _run_config(FLAGS.model_dir or os.path.dirname(path))
        backbone = FLAGS.backbone or config.get("backbone")
        if backbone:
            backbones.check_backbone(backbone)
        width = FLAGS.width or config.get("width", 1.0)
        out_dir = FLAGS.output_dir or os.path.join(os.path.dirname(os.path.abspath(path)), "export")
        existing = [f"{v}.tflite" for v in FLAGS.variants
                    if os.path.exists(os.path.join(out_dir, f"{v}.tflite"))]
        if os.path.exists(os.path.join(out_dir, "report.json")):
            existing.append("report.json")
        if existing and not FLAGS.overwrite:
            raise UsageError(f"{out_dir} already holds {', '.join(existing)}; pass --overwrite "
                             "to replace them or --output_dir=NEW")
        data_dir = FLAGS.data_dir or (None if FLAGS.dataset else config.get("data_dir"))
        source = data.make_source(FLAGS.dataset or config.get("dataset", "stl10"), data_dir,
                                  FLAGS.tfds_data_dir or config.get("tfds_data_dir"))
        probe_splits = evaluation.folder_splits(FLAGS.eval_data_dir) if FLAGS.eval_data_dir else None
        export.export_encoder(
            encoder, out_dir, FLAGS.variants, source, backbone=backbone, width=width,
            calibration_images=FLAGS.calibration_images, agreement_images=FLAGS.agreement_images,
            int8_io=FLAGS.int8_io, qat_images=FLAGS.qat_images, qat_epochs=FLAGS.qat_epochs,
            qat_learning_rate=FLAGS.qat_learning_rate, probe_splits=probe_splits,
            latency_runs=FLAGS.latency_runs, threads=[int(t) for t in FLAGS.threads],
            seed=FLAGS.seed, recalibrate_bn_images=FLAGS.recalibrate_bn_images)
    except (UsageError, export.ExportMismatch) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out_dir}")


if __name__ == "__main__":
    app.run(main)
