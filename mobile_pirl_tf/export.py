"""Export an encoder to TFLite variants and report what each costs and wins
(`python export/to_tflite.py`).

For every variant (`tflite.VARIANTS`) the report holds: file size (and its ratio to float32);
agreement with the Keras encoder on held-out real images (cosine similarity of the features,
raw and centred on the Keras features' mean, largest absolute difference; see `agreement`);
the linear-probe top-1 of `evaluation` computed on the TFLite features (when a labelled
folder is given, beside the Keras encoder's own); host latency with the LiteRT interpreter and
XNNPACK (median and p90 after warm-up, per thread count); the op list (no Flex op may appear). A variant whose mean centred cosine falls below
its tolerance (`MIN_COSINE`) fails the export loudly, after the report is written.

Images: calibration (int8), QAT distillation and agreement images are centre crops of the
training data (the same data flags as train.py), drawn with a fixed seed; the agreement images
are disjoint from the others.
"""

import json
import os
import time

import numpy as np
import tensorflow as tf

from mobile_pirl_tf import UsageError, evaluation, tflite

# Smallest acceptable mean centred cosine similarity to the Keras encoder's features
# (`agreement`), per variant.
MIN_COSINE = {"float32": 0.9999, "float16": 0.999, "dynamic": 0.99, "int8": 0.90,
              "qat_int8": 0.90}
MIN_CALIBRATION_IMAGES = 200
# QAT distillation: 4,096 extra images x 5 epochs brought a 64 px MobileNetV3-Small within
# 0.6 points of float (1,024 x 2: 1.5 points); Adam 1e-4, cosine-decayed (3e-4 over 10 epochs
# did worse on EfficientNet-B0 once dropout was off); see BENCHMARKS.md.
QAT_IMAGES, QAT_EPOCHS, QAT_LEARNING_RATE = 4096, 5, 1e-4
LOW_FEATURE_SPREAD = 1e-2


def sample_images(source, count, image_size, seed=0, skip=0):
    """`count` centre-cropped float images [count, S, S, 3] of a data source, after skipping the
    first `skip` of a seeded order (so two calls with different `skip` do not overlap)."""
    if source.paths is not None:
        order = np.random.default_rng(seed).permutation(len(source.paths))[skip:skip + count]
        keys = tf.data.Dataset.from_tensor_slices(
            tf.constant([source.paths[i] for i in order], tf.string))
    else:
        keys = source.keys.shuffle(min(source.num_examples, 10_000), seed=seed,
                                   reshuffle_each_iteration=False).skip(skip).take(count)
    images = keys.map(lambda k: evaluation.centre_crop(source.decode(k), image_size))
    images = list(images.ignore_errors().as_numpy_iterator())
    return np.stack(images) if images else np.zeros((0, image_size, image_size, 3), np.float32)


def _cosines(a, b):
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)


def feature_spread(features):
    """|std over images| / |mean| of [N, d] features: near 0, they barely tell images apart."""
    features = np.asarray(features, np.float64)
    return float(np.linalg.norm(features.std(axis=0))
                 / max(np.linalg.norm(features.mean(axis=0)), 1e-12))


def feature_scale(features):
    """Per-feature spread (std over the images) of [N, d] features, floored at 1e-3 of the largest
    so that a constant feature does not divide by zero: the scale the linear probe standardises
    each feature to (`evaluation.linear_probe_scores`, which adds 1e-6 instead of a floor), used
    by `agreement` and as the QAT distillation loss's scale."""
    spread = np.asarray(features, np.float64).std(axis=0)
    return np.maximum(spread, 1e-3 * max(float(spread.max()), 1e-12))


def agreement(reference, features):
    """How far converted features are from the reference, over [N, d] rows of the same images.

    cosine_*: cosine similarity of each image's two feature vectors. centred_cosine_*: the same
    after subtracting the reference's mean feature from both; this is what the tolerance checks,
    because features often share a large common component (seen: mean norm 0.38, per-image
    spread 1e-4 for a briefly trained MobileNetV3-Small) that keeps the raw cosine at 0.9999
    while int8 rounding erases every difference between images (its linear probe fell from 46%
    to 20%). feature_spread = |std over images| / |mean|: near 0 the encoder barely tells images
    apart. standardised_mse: the mean squared difference with every feature in units of its
    spread over the images (`feature_scale`), what the linear probe sees; the cosines are
    dominated by the few features of largest magnitude and can look fine while the many small
    ones are lost (EfficientNet-B0 QAT int8: centred cosine 0.95, standardised MSE 0.12-0.15,
    probe 4-7 points below float; MobileNetV2: 0.0071, +0.36; BENCHMARKS.md). None for a single
    image. max_abs_diff: the largest absolute difference.
    """
    reference = np.asarray(reference, np.float64)
    features = np.asarray(features, np.float64)
    cosine = _cosines(reference, features)
    mean = reference.mean(axis=0, keepdims=True) if len(reference) > 1 else 0.0
    centred = _cosines(reference - mean, features - mean)
    return {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
            "centred_cosine_mean": float(centred.mean()),
            "centred_cosine_min": float(centred.min()),
            "feature_spread": feature_spread(reference),
            "standardised_mse": (float(np.mean(((features - reference)
                                                / feature_scale(reference)) ** 2))
                                 if len(reference) > 1 else None),
            "max_abs_diff": float(np.max(np.abs(reference - features)))}


def probe(features_fn, train, test, image_size, seed=0):
    """Linear-probe top-1 of features_fn(images) on a labelled split pair."""
    def extract(split):
        return np.concatenate([features_fn(batch.numpy())
                               for batch in evaluation.split_images(split, image_size)])
    result = evaluation.evaluate_features("linear", extract(train), train.labels, extract(test),
                                          test.labels, len(train.classes), seed)
    return result["top1"]


def export_encoder(encoder, out_dir, variants, source, backbone=None, width=1.0,
                   calibration_images=256, agreement_images=100, int8_io="uint8",
                   qat_images=QAT_IMAGES, qat_epochs=QAT_EPOCHS,
                   qat_learning_rate=QAT_LEARNING_RATE, probe_splits=None, latency_runs=50,
                   threads=(1, 2), seed=0, recalibrate_bn_images=0, log=print):
    """Writes <variant>.tflite files and report.json to out_dir; returns the report.

    recalibrate_bn_images > 0 first re-estimates the encoder's batch-norm statistics (in
    memory: the encoder file is not touched) on that many images of `source`.
    """
    size = int(encoder.input.shape[1])
    if recalibrate_bn_images:
        images = sample_images(source, recalibrate_bn_images, size, seed + 1)
        evaluation.recalibrate_batchnorm_on(
            encoder, (images[i:i + 128] for i in range(0, len(images), 128)))
    needs_images = any(v in ("int8", "qat_int8") for v in variants)
    calibration = np.zeros((0, size, size, 3), np.float32)
    if needs_images:
        calibration = sample_images(source, calibration_images, size, seed)
        if len(calibration) < min(MIN_CALIBRATION_IMAGES, calibration_images):
            raise UsageError(f"int8 calibration needs at least {MIN_CALIBRATION_IMAGES} images; "
                             f"{source.name} gave {len(calibration)}; point the data flags at a "
                             "larger set (or pass a smaller --calibration_images to accept it)")
    held_out = sample_images(source, agreement_images, size, seed, skip=len(calibration))
    if len(held_out) == 0:
        held_out = sample_images(source, agreement_images, size, seed)
    reference = np.asarray(encoder.predict(held_out, verbose=0, batch_size=32))
    spread = feature_spread(reference)
    if spread < LOW_FEATURE_SPREAD:
        log(f"warning: the encoder's features barely differ between images (spread {spread:.2g}"
            f" of their mean): its batch-norm statistics may be stale (a short run); "
            f"re-estimate them with --recalibrate_bn_images=2560")

    def qat_training_images():  # after the calibration and agreement images, disjoint from both
        images = sample_images(source, qat_images, size, seed,
                               skip=len(calibration) + len(held_out))
        return np.concatenate([calibration, images]) if len(images) else calibration

    report = {"encoder_input": size, "backbone": backbone, "variants": {},
              "calibration_images": int(len(calibration)), "agreement_images": int(len(held_out)),
              "int8_io": int8_io, "data": source.name, "threads": list(threads),
              "latency_runs": latency_runs, "min_cosine": MIN_COSINE,
              "feature_spread": spread, "bn_recalibration_images": recalibrate_bn_images}
    if probe_splits:
        train, test = probe_splits
        report["keras_probe_top1"] = probe(
            lambda x: np.asarray(encoder.predict(x, verbose=0, batch_size=32)), train, test, size, seed)
        log(f"keras encoder: linear-probe top-1 {100 * report['keras_probe_top1']:.2f}")
    os.makedirs(out_dir, exist_ok=True)
    failures = []
    for variant in variants:
        started = time.time()
        log(f"{variant}: converting ...")
        model, extra = encoder, {}
        if variant == "qat_int8":
            model, extra = quantization_aware(encoder, backbone, width, calibration,
                                              qat_training_images() if qat_epochs else None,
                                              qat_epochs, qat_learning_rate, seed)
        flatbuffer = tflite.convert(model, variant, calibration, int8_io)
        path = os.path.join(out_dir, f"{variant}.tflite")
        with open(path + ".tmp", "wb") as f:
            f.write(flatbuffer)
        os.replace(path + ".tmp", path)
        runner = tflite.interpreter(flatbuffer, num_threads=2)  # one for every batch below
        entry = {"file": path, "bytes": len(flatbuffer), "ops": tflite.op_names(flatbuffer),
                 "flex_ops": tflite.flex_ops(flatbuffer), **extra,
                 **agreement(reference, tflite.run(runner, held_out))}
        if probe_splits:
            entry["probe_top1"] = probe(lambda x: tflite.run(runner, x), *probe_splits, size, seed)
        entry["latency_ms"] = {str(t): tflite.measure_latency(flatbuffer, t, latency_runs)
                               for t in threads}
        entry["passed"] = (entry["centred_cosine_mean"] >= MIN_COSINE[variant]
                           and not entry["flex_ops"])
        entry["seconds"] = round(time.time() - started, 1)
        report["variants"][variant] = entry
        if not entry["passed"]:
            failures.append(f"{variant} (centred cosine {entry['centred_cosine_mean']:.4f} < "
                            f"{MIN_COSINE[variant]}, flex ops {entry['flex_ops']})")
    base = report["variants"].get("float32", {}).get("bytes")
    for entry in report["variants"].values():
        entry["size_vs_float32"] = entry["bytes"] / base if base else None
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    log(format_report(report))
    if failures:
        raise ExportMismatch("converted model disagrees with the Keras encoder: "
                             + "; ".join(failures) + f" (report: {out_dir}/report.json)")
    return report


class ExportMismatch(RuntimeError):
    """A converted variant disagrees with the Keras encoder beyond its tolerance."""


def quantization_aware(encoder, backbone, width, calibration, images, epochs, learning_rate,
                       seed):
    """The QAT model (tf_keras) of `encoder`: activation ranges initialised on `calibration`,
    then fine-tuned by feature distillation on `images` for `epochs` (0: the calibrated
    fake-quantized model as it is, `images` unused)."""
    from mobile_pirl_tf import qat  # tf_keras and tfmot stay confined to this import

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
        losses = qat.distill(model, images, teacher, feature_scale(teacher), epochs,
                             learning_rate, seed=seed)
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
        cells += [f"{e['latency_ms'][str(t)]['median_ms']:.2f} ({e['latency_ms'][str(t)]['p90_ms']:.2f})"
                  for t in threads]
        lines.append("| " + " | ".join(cells) + " |")
    if "keras_probe_top1" in report:
        lines.append(f"\nKeras encoder linear-probe top-1: {100 * report['keras_probe_top1']:.2f}")
    return "\n".join(lines)
