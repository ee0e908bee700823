"""Why some backbones lose more to int8 than others: the rounding noise of their activations.

    python benchmarks/quantization_noise.py [--runs_dir=runs/export_accuracy] [--backbones=...]
    python benchmarks/quantization_noise.py --encoder=runs/NAME/encoder.keras

Reads RUNS_DIR/<backbone>/encoder.keras as `benchmarks/export_accuracy.py` leaves them, or
one --encoder (nothing is trained here), and runs each on --images real images. For every
activation tensor that a full-integer file stores in int8 (activation outputs, residual sums,
squeeze-excite products, and batch norms NOT followed by an activation; a batch norm that is,
is fused into its convolution), post-training int8 spreads 256 steps over the tensor's whole
[min, max] range. Uniform rounding then adds noise of sd (range / 255) / sqrt(12), printed
relative to the tensor's own sd; the sum of squares over tensors is, to first order, the
noise-to-signal variance the features accumulate. A tensor whose few large values stretch its
range (ReLU networks; ReLU6 caps them at 6) gets coarse steps for all its ordinary values.

It ranks the seven backbones as their measured int8 losses do (docs/notes/int8-accuracy.md),
so it says before any export which backbone will quantize well. It is a predictor, not a lever
(equalizing channel ranges lowers it without making the int8 file better: same note).

Prints one line per backbone: median, p90 and max of the relative noise over tensors, their sum
of squares, and the tensors with the largest relative noise.
"""

import os

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from absl import flags  # noqa: E402

from mobile_pirl_tf.core import cli  # noqa: E402
from mobile_pirl_tf.data import sources

STORED = ("ReLU", "Activation", "Add", "Multiply", "BatchNormalization")

flags.DEFINE_string("runs_dir", "runs/export_accuracy",
                    "The --output_dir of benchmarks/export_accuracy.py (BACKBONE/encoder.keras).")
flags.DEFINE_list("backbones", ["mobilenetv2", "efficientnetlite0", "mobilenetv3small",
                                "mnasnet_b1", "mnasnet_a1", "mobilenetv3large", "efficientnetb0"],
                  "Backbones, in order (those without an encoder are skipped, and said so).")
flags.DEFINE_string("encoder", None, "One encoder.keras to measure instead of --runs_dir.")
cli.define_common("data_dir")
flags.DEFINE_integer("images", 128, "Images to measure the activations on.")
cli.show_in_help("Benchmark", "runs_dir", "backbones", "encoder", "images")
FLAGS = flags.FLAGS


def stored_in_int8(layer):
    """Whether a full-integer file keeps this layer's (4-D) output as an int8 tensor."""
    name = type(layer).__name__
    if name not in STORED or len(layer.output.shape) != 4:
        return False
    consumers = layer._outbound_nodes
    return not (name == "BatchNormalization" and len(consumers) == 1
                and type(consumers[0].operation).__name__ in ("ReLU", "Activation"))


def stored_outputs(model, x):
    """[(layer, output on x)] for every layer `stored_in_int8`, nested models expanded (each
    nested model is called once, on the input or on the output of one layer before it). Only
    those outputs, and the ones nested models are called on, are computed."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    nested = [layer for layer in layers if isinstance(layer, keras.Model)]
    sources = {m.name: m._inbound_nodes[-1].input_tensors[0]._keras_history.operation.name
               for m in nested}
    needed = [layer for layer in layers if not isinstance(layer, keras.Model)
              and (stored_in_int8(layer) or layer.name in sources.values())]
    values = []
    if needed:
        values = keras.Model(model.input, [layer.output for layer in needed]).predict(x, verbose=0)
        values = values if isinstance(values, list) else [values]
    by_name = {layer.name: value for layer, value in zip(needed, values)}
    found = [(layer, value) for layer, value in zip(needed, values) if stored_in_int8(layer)]
    for m in nested:
        found += stored_outputs(m, by_name.get(sources[m.name], x))
    return found


def relative_noise(encoder, images):
    """[(relative rounding-noise sd, layer name)] of every int8-stored activation tensor."""
    noise = []
    for layer, value in stored_outputs(encoder, images):
        steps = (max(float(value.max()), 0.0) - min(float(value.min()), 0.0)) / 255
        noise.append((steps / np.sqrt(12) / max(float(value.std()), 1e-12), layer.name))
    return noise


def main(_):
    source = sources.folder_source(FLAGS.data_dir)
    print(f"images={FLAGS.images} data={FLAGS.data_dir}")
    paths = ({FLAGS.encoder: FLAGS.encoder} if FLAGS.encoder else
             {b: os.path.join(FLAGS.runs_dir, b, "encoder.keras") for b in FLAGS.backbones})
    for backbone, path in paths.items():
        if not os.path.exists(path):
            print(f"{backbone}: no encoder at {path} (train one, or run "
                  "benchmarks/export_accuracy.py first)")
            continue
        encoder = keras.models.load_model(path, compile=False)
        images = sources.sample_images(source, FLAGS.images, int(encoder.input.shape[1]))
        noise = relative_noise(encoder, images)
        rel = np.array([n for n, _ in noise])
        worst = ", ".join(f"{name} {n:.3f}" for n, name in sorted(noise, reverse=True)[:3])
        print(f"{backbone}: tensors={len(rel)} relative_noise median={np.median(rel):.4f} "
              f"p90={np.percentile(rel, 90):.4f} max={rel.max():.4f} "
              f"sum_of_squares={np.sum(rel ** 2):.4f} worst: {worst}", flush=True)


if __name__ == "__main__":
    cli.run(main, __doc__)
