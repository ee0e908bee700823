"""What quantization costs in accuracy, per mobile backbone, on PIRL-trained encoders
(issue #6 accuracy targets).

    python benchmarks/export_accuracy.py [--backbones=mobilenetv2,...] [--epochs=2]

For each backbone, in one run:
1. pretrain with PIRL at --image_size on DATA/train (labels unused) for --epochs, with
   --transforms (default `crop`, the best cell of the transformation sweep and the cheapest
   per step; `jigsaw` is the paper's); skipped when OUT/<backbone>/ already holds the
   finished run, so reruns resume;
2. export float32, int8 (post-training, calibrated on 256 training images) and qat_int8
   (feature distillation) with `export.export_encoder`, which probes every variant's TFLite
   features with the project's linear probe on DATA/train -> DATA/test;
3. print the probe top-1 of the Keras encoder and of each variant, and the differences
   int8 - float32 and qat_int8 - float32 in points, against the targets:
   post-training int8 within 2 points of float32 for ReLU6 networks, QAT int8 within 1 point
   for every mobile backbone.

A variant whose features disagree with the Keras encoder beyond its tolerance is recorded as
failed (with its cosine) and the run goes on with the next backbone. Latency at this size is
not the point here (see benchmarks/export_targets.py at 224 px); it is timed with few runs.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from mobile_pirl_tf import data, evaluation, export, training  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "imagenette")
RELU6 = ("mobilenetv2", "efficientnetlite0")  # networks whose activations are all ReLU6
PTQ_POINTS, QAT_POINTS = 2.0, 1.0

flags.DEFINE_list("backbones", ["mobilenetv3small", "mobilenetv2", "efficientnetlite0",
                                "mnasnet_a1", "mnasnet_b1", "mobilenetv3large", "efficientnetb0"],
                  "Backbones, in order.")
flags.DEFINE_string("data_root", DATA, "train/ and test/ folders of real images.")
flags.DEFINE_string("output_dir", "runs/export_accuracy", "One run folder per backbone.")
flags.DEFINE_integer("image_size", 64, "Input size (training and export).")
flags.DEFINE_integer("epochs", 2, "PIRL epochs per backbone.")
flags.DEFINE_string("transforms", "crop", "PIRL pretext transformations (see train.py).")
flags.DEFINE_integer("batch_size", 64, "PIRL batch size.")
flags.DEFINE_float("learning_rate", 0.06, "PIRL learning rate per 256 images (InfoNCE).")
flags.DEFINE_list("variants", ["float32", "int8", "qat_int8"], "Variants to export and probe.")
flags.DEFINE_integer("qat_epochs", 2, "QAT feature-distillation epochs.")
flags.DEFINE_integer("seed", 0, "Seed.")
FLAGS = flags.FLAGS


def pretrain(backbone, model_dir):
    config = training.TrainConfig(
        backbone=backbone, image_size=FLAGS.image_size, transforms=FLAGS.transforms,
        batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate, loss="infonce",
        num_negatives=4096, shared_negatives=True, seed=FLAGS.seed,
        data_dir=os.path.join(FLAGS.data_root, "train"), model_dir=model_dir, verbose=2)
    return training.train(config)


def summary_line(backbone, report, error):
    variants = report.get("variants", {}) if report else {}
    float_top1 = variants.get("float32", {}).get("probe_top1")
    cells = [f"{backbone}:"]
    if report and "keras_probe_top1" in report:
        cells.append(f"keras={100 * report['keras_probe_top1']:.2f}")
    for name, entry in variants.items():
        cells.append(f"{name}={100 * entry['probe_top1']:.2f}(cos {entry['cosine_mean']:.4f})")
    for name, limit, applies in (("int8", PTQ_POINTS, backbone in RELU6),
                                 ("qat_int8", QAT_POINTS, True)):
        if float_top1 is not None and name in variants:
            delta = 100 * (variants[name]["probe_top1"] - float_top1)
            verdict = ("met" if abs(delta) <= limit else "NOT met") if applies else "no target"
            cells.append(f"{name}_minus_float32={delta:+.2f} ({verdict}, target {limit:g})")
    if error:
        cells.append(f"FAILED: {error}")
    return " ".join(cells)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    splits = evaluation.folder_splits(FLAGS.data_root)
    source = data.folder_source(os.path.join(FLAGS.data_root, "train"))
    lines = []
    for backbone in FLAGS.backbones:
        model_dir = os.path.join(FLAGS.output_dir, backbone)
        run = pretrain(backbone, model_dir)
        encoder, _ = evaluation.load_encoder(encoder_path=run["encoder"])
        out_dir = os.path.join(model_dir, "export")
        error = None
        try:
            export.export_encoder(encoder, out_dir, FLAGS.variants, source, backbone=backbone,
                                  qat_epochs=FLAGS.qat_epochs, probe_splits=splits,
                                  latency_runs=10, threads=(2,), seed=FLAGS.seed)
        except export.ExportMismatch as e:
            error = str(e)
        with open(os.path.join(out_dir, "report.json")) as f:
            report = json.load(f)
        lines.append(summary_line(backbone, report, error))
        print(lines[-1], flush=True)
    print("\n".join(["", f"image_size={FLAGS.image_size} epochs={FLAGS.epochs} "
                          f"transforms={FLAGS.transforms}"] + lines))


if __name__ == "__main__":
    app.run(main)
