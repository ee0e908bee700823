"""Does PIRL learn? PIRL-Jigsaw vs random init vs supervised, same backbone and CPU budget.

    python benchmarks/quality.py [--budget_minutes=20 --backbone=mobilenetv3small --image_size=64]

1. Pretrains with PIRL on DATA/train without labels, for as many epochs as fit the budget
   (the step time is measured first, so the cosine schedule completes).
2. Trains the same backbone with labels for the same budget (the supervised baseline).
3. Builds the random-init encoder (same seed).
4. Linear probe (and kNN) of each frozen encoder on DATA/train -> DATA/test.

Prints top-1 of each and gap_closed = (pirl - random) / (supervised - random).
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
from absl import flags, logging  # noqa: E402

from mobile_pirl_tf.core import cli, config, records
from mobile_pirl_tf.data import labelled, pipeline, sources
from mobile_pirl_tf.evaluation import baselines, probes
from mobile_pirl_tf.models import (
    backbones,  # noqa: E402
    batchnorm,
)
from mobile_pirl_tf.training import fit as training

cli.define_common("eval_data_dir", "output_dir", "backbone", "image_size", "seed",
                  output_dir="runs/quality")
flags.DEFINE_float("budget_minutes", 20, "Training budget per method (PIRL, supervised).")
flags.DEFINE_integer("batch_size", 64, "PIRL batch size.")
flags.DEFINE_float("learning_rate", 0.03, "PIRL learning rate per 256 images.")
flags.DEFINE_enum("loss", "nce", ["nce", "infonce"], "PIRL loss.")
flags.DEFINE_integer("num_negatives", 4096, "PIRL negatives.")
flags.DEFINE_bool("shared_negatives", True, "Shared negatives (faster on CPU).")
flags.DEFINE_float("temperature", 0.07, "PIRL temperature.")
flags.DEFINE_float("bank_momentum", 0.5, "Memory-bank momentum.")
flags.DEFINE_string("head", "linear", "PIRL heads.")
flags.DEFINE_float("view_min_scale", 0.08, "Smallest area fraction of the image view's crop.")
flags.DEFINE_integer("pirl_epochs", None, "PIRL epochs (default: as many as the measured step "
                     "time fits in the budget); set it to compare runs at equal epochs.")
flags.DEFINE_list("skip", [], "Methods to skip (pirl, supervised, random): reuse earlier results.")
cli.show_in_help("Benchmark", "budget_minutes", "batch_size", "learning_rate", "loss",
                 "num_negatives", "shared_negatives", "temperature", "bank_momentum", "head",
                 "view_min_scale", "pirl_epochs", "skip")
FLAGS = flags.FLAGS


def pirl_config(epochs, model_dir):
    return config.TrainConfig(
        backbone=FLAGS.backbone, image_size=FLAGS.image_size, batch_size=FLAGS.batch_size,
        epochs=epochs, learning_rate=FLAGS.learning_rate, loss=FLAGS.loss,
        num_negatives=FLAGS.num_negatives, shared_negatives=FLAGS.shared_negatives,
        temperature=FLAGS.temperature, bank_momentum=FLAGS.bank_momentum, head=FLAGS.head,
        view_min_scale=FLAGS.view_min_scale,
        seed=FLAGS.seed, data_dir=os.path.join(FLAGS.eval_data_dir, "train"), model_dir=model_dir,
        verbose=2)


def pirl_epochs_for_budget(num_examples, budget_seconds):
    """Epochs that fit the budget, from the measured time of train steps fed by the real input
    pipeline (it shares the CPU with the step), plus a 10% margin."""
    train_config = pirl_config(1, "/nonexistent")
    model = training.build_pirl(train_config, num_examples)
    training.build_variables(model, train_config)
    source = sources.folder_source(train_config.data_dir)
    batches = iter(pipeline.pretraining_dataset(
        source, train_config.image_size, train_config.batch_size,
        num_examples // train_config.batch_size, train_config.seed,
        names=train_config.transform_names(), params=train_config.transform_params()))
    step = tf.function(model.train_step)
    for _ in range(3):  # tracing, and the pipeline filling its buffers
        float(step(next(batches))["loss"])
    timed = 10
    start = time.perf_counter()
    for _ in range(timed):
        out = step(next(batches))
    float(out["loss"])
    per_step = (time.perf_counter() - start) / timed * 1.1
    steps_per_epoch = num_examples // train_config.batch_size
    epochs = max(1, int((budget_seconds - 60) / (per_step * steps_per_epoch)))  # 60 s: tracing
    logging.info("PIRL: %.3f s/step, %d steps/epoch -> %d epochs", per_step, steps_per_epoch,
                 epochs)
    return epochs


def main(argv):
    del argv
    budget = FLAGS.budget_minutes * 60
    train, test = labelled.folder_splits(FLAGS.eval_data_dir)
    out = FLAGS.output_dir
    encoders = {}
    timings = {}

    pirl_dir = os.path.join(out, "pirl")
    if "pirl" not in FLAGS.skip:
        epochs = FLAGS.pirl_epochs or pirl_epochs_for_budget(len(train.labels), budget)
        started = time.time()
        training.train(pirl_config(epochs, pirl_dir))
        timings["pirl"] = round(time.time() - started, 1)
    encoders["pirl"] = os.path.join(pirl_dir, "encoder.keras")

    sup_dir = os.path.join(out, "supervised")
    if "supervised" not in FLAGS.skip:
        started = time.time()
        encoder, info = baselines.supervised_encoder(FLAGS.backbone, FLAGS.image_size, train,
                                                     budget_seconds=budget, epochs=10_000,
                                                     seed=FLAGS.seed)
        timings["supervised"] = round(time.time() - started, 1)
        os.makedirs(sup_dir, exist_ok=True)
        encoder.save(os.path.join(sup_dir, "encoder.keras"))
        records.write_json(os.path.join(sup_dir, "baseline.json"), info)
    encoders["supervised"] = os.path.join(sup_dir, "encoder.keras")

    random_dir = os.path.join(out, "random")
    os.makedirs(random_dir, exist_ok=True)
    encoders["random"] = os.path.join(random_dir, "encoder.keras")
    if "random" not in FLAGS.skip:
        baselines.random_encoder(FLAGS.backbone, FLAGS.image_size, seed=FLAGS.seed).save(
            encoders["random"])

    reports = []
    # The protocol's BN recalibration (default), and each encoder's own moving statistics (0).
    for bn_images in (batchnorm.BN_RECALIBRATION_IMAGES, 0):
        for label in ("pirl", "random", "supervised"):
            encoder, path = backbones.load_encoder(encoder_path=encoders[label])
            for protocol in ("linear", "knn"):
                report = probes.evaluate_encoder(encoder, path, train, test, protocol,
                                                 os.path.dirname(path), FLAGS.seed,
                                                 label=label, bn_images=bn_images,
                                                 file_suffix=f"_bn{bn_images}")
                reports.append(report)
    print(probes.format_table(reports))
    for bn_images in (batchnorm.BN_RECALIBRATION_IMAGES, 0):
        for protocol in ("linear", "knn"):
            top1 = {r["label"]: r["top1"] for r in reports
                    if r["protocol"] == protocol and r["bn_recalibration_images"] == bn_images}
            gap = probes.gap_closed(top1["pirl"], top1["random"], top1["supervised"])
            print(f"{protocol} bn_recalibration_images={bn_images}: "
                  f"pirl={100 * top1['pirl']:.2f} random={100 * top1['random']:.2f} "
                  f"supervised={100 * top1['supervised']:.2f} "
                  f"pirl_minus_random={100 * (top1['pirl'] - top1['random']):.2f} "
                  f"gap_closed={gap:.3f}")
    print(f"training_seconds {json.dumps(timings)}")
    flag_names = ("backbone", "image_size", "budget_minutes", "batch_size", "learning_rate",
                  "loss", "num_negatives", "shared_negatives", "temperature", "bank_momentum",
                  "head", "view_min_scale", "pirl_epochs")
    records.write_json(os.path.join(out, "quality.json"),
                       {"reports": reports, "training_seconds": timings,
                        "flags": {k: FLAGS[k].value for k in flag_names}})


if __name__ == "__main__":
    cli.run(main, __doc__)
