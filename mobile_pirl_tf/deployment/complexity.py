"""The backbone zoo compared as in the proposal's Table I: size, multiply-adds and latency
(the command is `benchmarks/table1.py`).

For every backbone: parameters with a 1000-class head and without (the PIRL encoder), the
multiply-adds of one image counted from the traced TensorFlow graph (`count_macs`), each as a
ratio to EfficientNet-B0, the pooled feature dimension, the published counts, and the float32
TFLite latency of the encoder on this machine (LiteRT interpreter with XNNPACK, median of
`--runs` invokes after warm-up, for each `--threads`). Writes `table1.md` and `table1.csv`.

Multiply-adds follow the papers' convention: the multiplications of convolutions and fully
connected layers (including squeeze-and-excitation), not batch norm, activations, pooling or
bias additions.
"""

import csv
import math
import os

import numpy as np
import tensorflow as tf

from mobile_pirl_tf.core import records
from mobile_pirl_tf.deployment import tflite
from mobile_pirl_tf.models import backbones

# (parameters, multiply-adds) at 224 px with a 1000-class head, as the papers publish them.
PUBLISHED = {
    "resnet50": (25.6e6, 4.1e9),
    "mobilenetv2": (3.5e6, 300e6),
    "mobilenetv3small": (2.5e6, 56e6),
    "mobilenetv3large": (5.4e6, 219e6),
    "efficientnetb0": (5.3e6, 390e6),
    "efficientnetlite0": (4.7e6, 407e6),
    "mnasnet_a1": (3.9e6, 312e6),
    "mnasnet_b1": (4.4e6, 315e6),
}
RATIO_BACKBONE = "efficientnetb0"


def count_macs(model, image_size):
    """Multiply-adds of one [1, image_size, image_size, 3] image, read off the traced graph.

    Conv2D: H_out x W_out x C_out x (k_h x k_w x C_in); depthwise: H_out x W_out x C_in x m x
    k_h x k_w; MatMul: M x K x N (batched: times the batch dims). Raises if an op it counts has
    a shape unknown at trace time.
    """
    spec = tf.TensorSpec([1, image_size, image_size, 3], tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    total = 0
    for op in graph.get_operations():
        if op.type in ("Conv2D", "DepthwiseConv2dNative"):
            out = op.outputs[0].shape.as_list()
            kernel = op.inputs[1].shape.as_list()          # [kh, kw, c_in, c_out or multiplier]
            per_output = kernel[0] * kernel[1] * (kernel[2] if op.type == "Conv2D" else 1)
            total += math.prod(out) * per_output
        elif op.type in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
            a = op.inputs[0].shape.as_list()
            out = op.outputs[0].shape.as_list()
            transpose_a = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
            inner = a[-2] if transpose_a else a[-1]
            total += math.prod(out) * inner
    return int(total)


def _encoder(name, image_size):
    backbone = backbones.build_backbone(name, input_shape=(image_size, image_size, 3))
    return backbones.build_encoder(backbone, image_size)


def describe(name, image_size, runs=50, threads=(1, 2)):
    """One table row: counts of the classifier and of the encoder, and encoder latency."""
    classifier = backbones.build_backbone(name, input_shape=(image_size, image_size, 3),
                                          include_top=True)
    encoder = _encoder(name, image_size)
    row = {
        "backbone": name,
        "image_size": image_size,
        "params_with_head": classifier.count_params(),
        "params_encoder": encoder.count_params(),
        "macs_with_head": count_macs(classifier, image_size),
        "macs_encoder": count_macs(encoder, image_size),
        "feature_dim": int(encoder.output.shape[-1]),
    }
    published = PUBLISHED.get(name)
    if published and image_size == 224:
        row["published_params"], row["published_macs"] = published
        row["params_vs_published"] = row["params_with_head"] / published[0] - 1
        row["macs_vs_published"] = row["macs_with_head"] / published[1] - 1
    if runs:
        flatbuffer = tflite.convert(encoder, "float32")
        row["tflite_float32_bytes"] = len(flatbuffer)
        for t in threads:
            row[f"latency_ms_{t}thread"] = tflite.measure_latency(flatbuffer, t, runs)["median_ms"]
    return row


def add_ratios(rows):
    """Each count as a ratio to EfficientNet-B0's, when EfficientNet-B0 is in the table."""
    ref = next((r for r in rows if r["backbone"] == RATIO_BACKBONE), None)
    for row in rows:
        for key in ("params_with_head", "macs_with_head"):
            row[f"{key}_vs_b0"] = row[key] / ref[key] if ref else float("nan")
    return rows


def _fmt(value, scale=1.0, digits=2, percent=False):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if percent:
        return f"{100 * value:+.1f}%"
    return f"{value / scale:.{digits}f}"


def markdown(rows, threads):
    head = ["backbone", "params (M), 1000-cls head", "published", "diff", "params (M), encoder",
            "MACs (M), head", "published", "diff", "MACs (M), encoder", "params / B0",
            "MACs / B0", "feature dim"] + [f"float32 TFLite ms, {t} thr" for t in threads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["backbone"], _fmt(r["params_with_head"], 1e6),
                 _fmt(r.get("published_params"), 1e6, 1),
                 _fmt(r.get("params_vs_published"), percent=True), _fmt(r["params_encoder"], 1e6),
                 _fmt(r["macs_with_head"], 1e6, 1), _fmt(r.get("published_macs"), 1e6, 0),
                 _fmt(r.get("macs_vs_published"), percent=True), _fmt(r["macs_encoder"], 1e6, 1),
                 _fmt(r["params_with_head_vs_b0"]), _fmt(r["macs_with_head_vs_b0"]),
                 str(r["feature_dim"])]
        cells += [_fmt(r.get(f"latency_ms_{t}thread")) for t in threads]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_table(rows, threads, output_dir):
    os.makedirs(output_dir, exist_ok=True)
    md_path, csv_path = (os.path.join(output_dir, f"table1.{ext}") for ext in ("md", "csv"))
    records.write_text(md_path, markdown(rows, threads))
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "backbone", k))
    with records.atomic_write(csv_path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return md_path, csv_path
