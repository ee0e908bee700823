"""Export of an encoder to LiteRT variants, with a report of what each costs and keeps
(`python export/to_tflite.py`).

For every variant (`tflite.VARIANTS`) the report holds: file size (and its ratio to float32);
agreement with the Keras encoder on held-out real images (`agreement.agreement`); the
linear-probe top-1 of `probes` computed on the variant's features (when a labelled folder is
given, beside the Keras encoder's own); host latency with the LiteRT interpreter and XNNPACK
(median and p90 after warm-up, per thread count); the op list (no Flex op may appear). A
variant whose mean centred cosine falls below its tolerance (`MIN_COSINE`) fails the export
loudly, after the report is written: a failed variant is written as <variant>.failed.tflite and
the report as report.failed.json, so only variants that pass carry the names apps load, and a
rerun needs no --overwrite.

Images: calibration (int8), QAT distillation and agreement images are centre crops of the
training data, drawn with a fixed seed; the agreement images are disjoint from the others.
"""

import os
import sys
import time

import numpy as np

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.core.export_config import ExportConfig
from mobile_pirl_tf.core.records import atomic_write, write_json
from mobile_pirl_tf.data import labelled, sources
from mobile_pirl_tf.deployment import tflite
from mobile_pirl_tf.deployment.agreement import agreement, feature_scale, feature_spread
from mobile_pirl_tf.evaluation import probes
from mobile_pirl_tf.models import batchnorm

# Smallest acceptable mean centred cosine similarity to the Keras encoder's features, per variant.
MIN_COSINE = {"float32": 0.9999, "float16": 0.999, "dynamic": 0.99, "int8": 0.90,
              "qat_int8": 0.90}
MIN_CALIBRATION_IMAGES = 200
LOW_FEATURE_SPREAD = 1e-2


def probe(features_fn, train, test, image_size, seed=0):
    """Linear-probe top-1 of features_fn(images) on a labelled split pair."""
    def extract(split):
        return np.concatenate([features_fn(batch.numpy())
                               for batch in labelled.split_images(split, image_size)])
    result = probes.evaluate_features("linear", extract(train), train.labels, extract(test),
                                          test.labels, len(train.classes), seed)
    return result["top1"]


def export_encoder(encoder, out_dir, source, config: ExportConfig, probe_splits=None, log=print):
    """Writes <variant>.tflite files and report.json to out_dir (module docstring).

    Args:
      encoder: a `keras.Model` with a fixed input [S, S, 3] float32 pixels in [0, 255] and
        pooled features [d] out (what train.py writes as encoder.keras).
      out_dir: the folder the files go to (created).
      source: a `data.sources.Source` of unlabelled images: int8 calibration, QAT and the
        held-out agreement images are seeded centre crops of it.
      config: the `ExportConfig` (variants, sample sizes, QAT, latency runs, threads, seed,
        `recalibrate_bn_images`: when > 0 the encoder's batch-norm statistics are first
        re-estimated in memory on that many images of `source`; the file is not touched).
      probe_splits: an optional (train, test) pair of `data.labelled.LabelledSplit`s: the
        linear probe's top-1 on each variant's features.

    Returns:
      The report (also report.json): per variant its file, bytes, ops, agreement with the
      Keras features, probe top-1, latency (median and p90 ms per thread count), passed.

    Raises:
      ExportMismatch: a variant fails its tolerance (after everything is written; the failed
        files are named <variant>.failed.tflite and report.failed.json).
    """
    c = config
    variants, seed, threads = c.variants, c.seed, tuple(c.threads)
    size = int(encoder.input.shape[1])
    if c.recalibrate_bn_images:
        batchnorm.recalibrate(encoder, sources.sample_dataset(
            source, c.recalibrate_bn_images, size, seed + 1).batch(128))
    needs_images = any(v in ("int8", "qat_int8") for v in variants)
    calibration = np.zeros((0, size, size, 3), np.float32)
    if needs_images:
        calibration = sources.sample_images(source, c.calibration_images, size, seed)
        if len(calibration) < min(MIN_CALIBRATION_IMAGES, c.calibration_images):
            raise UsageError(f"int8 calibration needs at least {MIN_CALIBRATION_IMAGES} images; "
                             f"{source.name} gave {len(calibration)}; point the data flags at a "
                             "larger set (or pass a smaller --calibration_images to accept it)")
    held_out = sources.sample_images(source, c.agreement_images, size, seed, skip=len(calibration))
    overlap = len(held_out) == 0
    if overlap:  # every image went to calibration: the check is then on calibration images
        held_out = sources.sample_images(source, c.agreement_images, size, seed)
        log(f"warning: {source.name} has no image left after the {len(calibration)} "
            "calibration images: the agreement check uses calibration images, on which int8 is "
            "at its best (optimistic); give more images or a smaller --calibration_images")
    elif len(held_out) < c.agreement_images:
        log(f"warning: only {len(held_out)} held-out images for the agreement check "
            f"(--agreement_images={c.agreement_images}); the rest went to calibration")
    reference = np.asarray(encoder.predict(held_out, verbose=0, batch_size=32))
    spread = feature_spread(reference)
    if spread < LOW_FEATURE_SPREAD:
        log(f"warning: the encoder's features barely differ between images (spread {spread:.2g}"
            f" of their mean): its batch-norm statistics may be stale (a short run); "
            f"re-estimate them with --recalibrate_bn_images=2560")

    def qat_training_images():  # after the calibration and agreement images, disjoint from both
        images = sources.sample_images(source, c.qat_images, size, seed,
                               skip=len(calibration) + len(held_out))
        return np.concatenate([calibration, images]) if len(images) else calibration

    report = {"encoder_input": size, "backbone": c.backbone, "variants": {},
              "calibration_images": int(len(calibration)), "agreement_images": int(len(held_out)),
              "agreement_overlaps_calibration": overlap,
              "int8_io": c.int8_io, "data": source.name, "threads": list(threads),
              "latency_runs": c.latency_runs, "min_cosine": MIN_COSINE,
              "feature_spread": spread, "bn_recalibration_images": c.recalibrate_bn_images}
    if probe_splits:
        train, test = probe_splits
        report["keras_probe_top1"] = probe(
            lambda x: np.asarray(encoder.predict(x, verbose=0, batch_size=32)), train, test, size,
            seed)
        log(f"keras encoder: linear-probe top-1 {100 * report['keras_probe_top1']:.2f}")
    os.makedirs(out_dir, exist_ok=True)
    failures = []
    for variant in variants:
        started = time.time()
        log(f"{variant}: converting ...")
        model, extra = encoder, {}
        if variant == "qat_int8":
            model, extra = quantization_aware(encoder, c.backbone, c.width or 1.0, calibration,
                                              qat_training_images() if c.qat_epochs else None,
                                              c.qat_epochs, c.qat_learning_rate, seed)
        flatbuffer = tflite.convert(model, variant, calibration, c.int8_io)
        path = os.path.join(out_dir, f"{variant}.tflite")
        runner = tflite.interpreter(flatbuffer, num_threads=2)  # one for every batch below
        entry = {"file": path, "bytes": len(flatbuffer), "ops": tflite.op_names(flatbuffer),
                 "flex_ops": tflite.flex_ops(flatbuffer), **extra,
                 **agreement(reference, tflite.run(runner, held_out))}
        if probe_splits:
            entry["probe_top1"] = probe(lambda x, r=runner: tflite.run(r, x), *probe_splits, size,
                                        seed)
        log(f"{variant}: timing {c.latency_runs} runs on {', '.join(map(str, threads))} "
            "thread(s) ...")
        entry["latency_ms"] = {str(t): tflite.measure_latency(flatbuffer, t, c.latency_runs)
                               for t in threads}
        entry["passed"] = (entry["centred_cosine_mean"] >= MIN_COSINE[variant]
                           and not entry["flex_ops"])
        entry["seconds"] = round(time.time() - started, 1)
        report["variants"][variant] = entry
        if not entry["passed"]:  # kept for inspection under a name that says so
            entry["file"] = path = os.path.join(out_dir, f"{variant}.failed.tflite")
        with atomic_write(path, "wb") as f:
            f.write(flatbuffer)
        if not entry["passed"]:
            failures.append(f"{variant} (centred cosine {entry['centred_cosine_mean']:.4f} < "
                            f"{MIN_COSINE[variant]}, flex ops {entry['flex_ops']})")
    base = report["variants"].get("float32", {}).get("bytes")
    for entry in report["variants"].values():
        entry["size_vs_float32"] = entry["bytes"] / base if base else None
    # A failed export's report says so in its name: a rerun then needs no --overwrite.
    report_path = os.path.join(out_dir, "report.failed.json" if failures else "report.json")
    write_json(report_path, report)
    log(format_report(report))
    if failures:
        raise ExportMismatch("converted model disagrees with the Keras encoder: "
                             + "; ".join(failures) + f" (report: {report_path}; the failed "
                             "variants kept as <variant>.failed.tflite)")
    return report


class ExportMismatch(RuntimeError):
    """A converted variant disagrees with the Keras encoder beyond its tolerance."""


def quantization_aware(encoder, backbone, width, calibration, images, epochs, learning_rate,
                       seed):
    """The QAT model (tf_keras) of `encoder`: activation ranges initialised on `calibration`,
    then fine-tuned by feature distillation on `images` for `epochs` (0: the calibrated
    fake-quantized model as it is, `images` unused)."""
    from mobile_pirl_tf.deployment import qat  # tf_keras and tfmot stay confined to this import

    if backbone is None:
        raise UsageError("qat_int8 needs the backbone name: pass --backbone (or a --model_dir "
                         "whose config.json names it)")
    twin = qat.twin(encoder, backbone, width)
    difference = qat.twin_max_difference(encoder, twin, calibration[:8])
    model = qat.quantize_aware(twin)
    qat.calibrate_ranges(model, twin, calibration)
    losses = []
    if epochs:
        teacher = np.asarray(encoder.predict(images, verbose=0, batch_size=32))
        # Keras' own progress: a bar on a terminal, a line per epoch in a log.
        losses = qat.distill(model, images, teacher, feature_scale(teacher), epochs,
                             learning_rate, seed=seed, verbose=1 if sys.stdout.isatty() else 2)
    return model, {"twin_max_abs_diff": difference, "qat_epochs": epochs,
                   "qat_images": int(len(images)) if epochs else 0,
                   "qat_distillation_loss": losses}


def format_report(report):
    threads = report["threads"]
    head = ["variant", "KB", "x float32", "cos mean", "centred cos mean (min)", "std. MSE",
            "max |diff|", "probe top-1"]
    head += [f"ms {t} thr (p90)" for t in threads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, e in report["variants"].items():
        ratio = e.get("size_vs_float32")
        cells = [name, f"{e['bytes'] / 1024:.0f}", f"{ratio:.3f}" if ratio else "-",
                 f"{e['cosine_mean']:.4f}",
                 f"{e['centred_cosine_mean']:.4f} ({e['centred_cosine_min']:.4f})",
                 "-" if e.get("standardised_mse") is None else f"{e['standardised_mse']:.3g}",
                 f"{e['max_abs_diff']:.3g}",
                 f"{100 * e['probe_top1']:.2f}" if "probe_top1" in e else "-"]
        latency = [e["latency_ms"][str(t)] for t in threads]
        cells += [f"{ms['median_ms']:.2f} ({ms['p90_ms']:.2f})" for ms in latency]
        lines.append("| " + " | ".join(cells) + " |")
    if "keras_probe_top1" in report:
        lines.append(f"\nKeras encoder linear-probe top-1: {100 * report['keras_probe_top1']:.2f}")
    return "\n".join(lines)
