"""What quantization costs in accuracy, per mobile backbone, on trained encoders
(the export's accuracy targets).

    python benchmarks/export_accuracy.py [--backbones=mobilenetv2,...] [--training=supervised]
                                         [--seeds=0,1,2]

For each backbone, in one run:
1. train the encoder at --image_size on DATA/train for --epochs (skipped when
   OUT/<backbone>/encoder.keras exists, so reruns resume):
   - `--training=supervised` (default): the project's supervised baseline (labels, crop + flip).
     On this 2-core CPU it is the only way to get a trained encoder of every backbone in
     minutes: after 2 PIRL epochs the features are still near their initialisation, which
     would make "int8 costs x points" a statement about random features.
   - `--training=pirl`: PIRL (run folder OUT/<backbone>/pirl) with --transforms (default
     `crop`, the best cell of the transformation sweep and the cheapest per step; `jigsaw` is
     the paper's), InfoNCE;
   then its batch-norm statistics are re-estimated on 2,560 training images, as the evaluation
   protocol does (after a few epochs they are mostly still at their initial values and the
   features barely vary across images);
2. export float32, int8 (post-training, calibrated on 256 training images) and qat_int8
   (feature distillation) with `deploy.export_encoder`, which probes every variant's TFLite
   features with the project's linear probe on DATA/train -> DATA/test;
3. print the probe top-1 of the Keras encoder and of each variant, and the differences
   int8 - float32 and qat_int8 - float32 in points, against the targets:
   post-training int8 within 2 points of float32 for ReLU6 networks, QAT int8 within 1 point
   for every mobile backbone;
4. with `--seeds=0,1,2`, repeat 2-3 per seed and print each difference as mean +- sd over the
   seeds. One export is one draw (its calibration, distillation and probe samples move QAT int8
   by 0.2-1 point: docs/notes/int8-accuracy.md), so a 1-point target is judged on a mean.

A variant whose features disagree with the Keras encoder beyond its tolerance is recorded as
failed (with its cosine) and the run goes on with the next backbone. Latency at this size is
not the point here (see benchmarks/export_targets.py at 224 px); it is timed with few runs.
"""

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags, logging  # noqa: E402

from mobile_pirl_tf.core import cli, config, export_config, records  # noqa: E402
from mobile_pirl_tf.core.export_config import ExportConfig  # noqa: E402

RELU6 = ("mobilenetv2", "efficientnetlite0")  # networks whose activations are all ReLU6
PTQ_POINTS, QAT_POINTS = 2.0, 1.0

flags.DEFINE_list("backbones", ["mobilenetv3small", "mobilenetv2", "efficientnetlite0",
                                "mnasnet_a1", "mnasnet_b1", "mobilenetv3large", "efficientnetb0"],
                  "Backbones, in order.")
cli.define_common("eval_data_dir", "output_dir", "image_size", output_dir="runs/export_accuracy")
flags.DEFINE_enum("training", "supervised", ["supervised", "pirl"], "How each encoder is trained.")
flags.DEFINE_integer("epochs", 3, "Training epochs per backbone.")
flags.DEFINE_string("transforms", "crop", "PIRL pretext transformations (see train.py).")
flags.DEFINE_integer("batch_size", 64, "PIRL batch size (supervised: 64).")
flags.DEFINE_float("learning_rate", 0.06, "PIRL learning rate per 256 images (InfoNCE).")
flags.DEFINE_list("variants", ["float32", "int8", "qat_int8"], "Variants to export and probe.")
flags.DEFINE_integer("qat_epochs", export_config.QAT_EPOCHS, "QAT feature-distillation epochs (0: "
                     "calibrated fake-quant ranges only).", lower_bound=0)
flags.DEFINE_float("qat_learning_rate", export_config.QAT_LEARNING_RATE,
                   "QAT Adam learning rate (cosine-decayed to 0).")
flags.DEFINE_list("seeds", ["0"], "Export seeds. Each one exports every variant again (own "
                  "calibration, agreement and QAT images, QAT run and probe seed) into "
                  "BACKBONE/export (seed 0) or BACKBONE/export_seedN; with several, the "
                  "differences to float32 are given as mean +- sd over seeds, and the targets "
                  "judged on the mean. The encoder is trained once, with the first seed.")
flags.register_validator("seeds", lambda seeds: bool(seeds) and all(s.isdigit() for s in seeds),
                         "--seeds must be a comma-separated list of non-negative integers")
cli.show_in_help("Benchmark", "backbones", "training", "epochs", "transforms", "batch_size",
                 "learning_rate", "variants", "qat_epochs", "qat_learning_rate", "seeds")
FLAGS = flags.FLAGS


def train_encoder(backbone, model_dir, train_split):
    """Path of the trained encoder of `backbone` (trained now unless it is already there)."""
    path = os.path.join(model_dir, "encoder.keras")
    if os.path.exists(path):
        return path
    from mobile_pirl_tf.evaluation import baselines, features
    from mobile_pirl_tf.models import backbones, batchnorm
    from mobile_pirl_tf.training import fit as training

    if FLAGS.training == "pirl":
        train_config = config.TrainConfig(
            backbone=backbone, image_size=FLAGS.image_size, transforms=FLAGS.transforms,
            batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate,
            loss="infonce", num_negatives=4096, shared_negatives=True, seed=int(FLAGS.seeds[0]),
            data_dir=os.path.join(FLAGS.eval_data_dir, "train"),
            model_dir=os.path.join(model_dir, "pirl"), verbose=2)
        encoder, _ = backbones.load_encoder(encoder_path=training.train(train_config)["encoder"])
        info = {}
    else:
        encoder, info = baselines.supervised_encoder(backbone, FLAGS.image_size, train_split,
                                                     epochs=FLAGS.epochs,
                                                     seed=int(FLAGS.seeds[0]))
    # A few epochs leave the BN moving statistics mostly at their init (momentum 0.999 in
    # MobileNetV2/V3): the features are then nearly constant across images. Re-estimate them,
    # as the evaluation protocol does, so that what is quantized is a usable encoder.
    features.recalibrate(encoder, train_split, FLAGS.image_size)
    os.makedirs(model_dir, exist_ok=True)
    with records.atomic_path(path) as tmp:
        encoder.save(tmp)
    records.write_json(os.path.join(model_dir, "encoder.json"),
                       {"training": FLAGS.training, "epochs": FLAGS.epochs,
                        "bn_recalibration_images": batchnorm.BN_RECALIBRATION_IMAGES, **info})
    return path


# variant: (points from float32, backbones it applies to; None: every backbone)
TARGETS = {"int8": (PTQ_POINTS, RELU6), "qat_int8": (QAT_POINTS, None)}


def differences(report):
    """{variant: probe top-1 minus float32's, in points} of one export report."""
    variants = report["variants"]
    float_top1 = variants.get("float32", {}).get("probe_top1")
    if float_top1 is None:
        return {}
    return {name: 100 * (entry["probe_top1"] - float_top1) for name, entry in variants.items()
            if name != "float32" and "probe_top1" in entry}


def verdict(backbone, name, delta):
    if name not in TARGETS:
        return "no target"
    limit, applies_to = TARGETS[name]
    if applies_to is not None and backbone not in applies_to:
        return f"no target, target {limit:g}"
    return f"{'met' if abs(delta) <= limit else 'NOT met'}, target {limit:g}"


def summary_line(backbone, report):
    """One seed's probe top-1 per variant and its differences to float32."""
    variants = report["variants"]
    cells = [f"{backbone}:"]
    if "keras_probe_top1" in report:
        cells.append(f"keras={100 * report['keras_probe_top1']:.2f}")
    for name, entry in variants.items():
        cells.append(f"{name}={100 * entry['probe_top1']:.2f}"
                     f"(centred cos {entry['centred_cosine_mean']:.4f})")
    for name, delta in differences(report).items():
        cells.append(f"{name}_minus_float32={delta:+.2f} ({verdict(backbone, name, delta)})")
    failed = [name for name, entry in variants.items() if not entry["passed"]]
    if failed:
        cells.append(f"FAILED_TOLERANCE={','.join(failed)}")
    return " ".join(cells)


def seeds_line(backbone, seeds, reports):
    """Mean +- sd over seeds of each variant's difference to float32 (each seed's variant
    against the same seed's float32), with the verdict on the mean."""
    per_seed = [differences(report) for report in reports]
    cells = [f"{backbone} over seeds {','.join(seeds)}:"]
    for name in per_seed[0]:
        deltas = [d[name] for d in per_seed if name in d]
        mean = float(np.mean(deltas))
        sd = float(np.std(deltas, ddof=1)) if len(deltas) > 1 else 0.0
        cells.append(f"{name}_minus_float32={mean:+.2f}+-{sd:.2f} "
                     f"[{' '.join(f'{d:+.2f}' for d in deltas)}] ({verdict(backbone, name, mean)})")
    return " ".join(cells)


def export_seed(encoder, backbone, model_dir, seed, source, splits):
    """The report of one seed's export (an earlier run's report is reused)."""
    out_dir = os.path.join(model_dir, "export" if seed == 0 else f"export_seed{seed}")
    report_path = os.path.join(out_dir, "report.json")
    if not os.path.exists(report_path):
        from mobile_pirl_tf.deployment import export as deploy

        export_config = ExportConfig(
            variants=tuple(FLAGS.variants), backbone=backbone, qat_epochs=FLAGS.qat_epochs,
            qat_learning_rate=FLAGS.qat_learning_rate, latency_runs=10, threads=(2,), seed=seed)
        try:
            deploy.export_encoder(encoder, out_dir, source, export_config, splits)
        except deploy.ExportMismatch as e:  # the report is written; the summary shows it
            logging.warning("%s", e)
    return records.read_json(report_path)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from mobile_pirl_tf.data import labelled, sources
    from mobile_pirl_tf.models import backbones

    splits = labelled.folder_splits(FLAGS.eval_data_dir)
    source = sources.folder_source(os.path.join(FLAGS.eval_data_dir, "train"))
    lines = []
    for backbone in FLAGS.backbones:
        model_dir = os.path.join(FLAGS.output_dir, backbone)
        encoder, _ = backbones.load_encoder(
            encoder_path=train_encoder(backbone, model_dir, splits[0]))
        reports = []
        for seed in FLAGS.seeds:
            reports.append(export_seed(encoder, backbone, model_dir, int(seed), source, splits))
            lines.append(summary_line(backbone, reports[-1]) + f" seed={seed}")
            print(lines[-1], flush=True)
        if len(reports) > 1:
            lines.append(seeds_line(backbone, FLAGS.seeds, reports))
            print(lines[-1], flush=True)
    print("\n".join(["", f"image_size={FLAGS.image_size} training={FLAGS.training} "
                          f"epochs={FLAGS.epochs}"] + lines))


if __name__ == "__main__":
    cli.run(main, __doc__)
