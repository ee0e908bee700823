"""Size and latency targets of the int8 export, per mobile backbone.

    python benchmarks/export_targets.py [--image_size=224] [--backbones=mobilenetv2,...]

For each backbone, in one run on this machine (LiteRT interpreter, XNNPACK, median of
--runs invokes after warm-up, 1 and 2 threads):

- int8_size_ratio      = int8 file / float32 file                      (target <= 0.28)
- int8_latency_ratio   = int8 median / float32 median, per thread count (target <= 0.5)
                         (median of --rounds interleaved rounds of --runs invokes each)
- export_vs_plain      = our float32 encoder / a plain keras.applications export of the same
                         network (include_top=False, pooling="avg"), per thread count
                         (target <= 1.02; keras.applications networks only), with
                         extra_ops (the ops our file has beyond the plain one's) and
                         plain_a_a (the plain file against itself, a second interpreter timed in
                         the same rounds: how far from 1 this machine's noise puts a ratio of
                         two identical graphs); where extra_ops is not none, extra_ops_ms (a
                         file of those ops alone, timed) and export_vs_plain_bound = 1 +
                         extra_ops_ms / plain_keras_ms

Weights are random (size and latency do not depend on their values), with batch-norm
statistics re-estimated on real images so that int8 calibration sees realistic activations;
int8 is calibrated on --calibration_images real images.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from absl import flags, logging  # noqa: E402

from mobile_pirl_tf.core import cli  # noqa: E402
from mobile_pirl_tf.data import labelled, sources  # noqa: E402
from mobile_pirl_tf.deployment import tflite  # noqa: E402
from mobile_pirl_tf.evaluation import features  # noqa: E402
from mobile_pirl_tf.models import backbones  # noqa: E402

PLAIN = {"mobilenetv2": "MobileNetV2", "mobilenetv3small": "MobileNetV3Small",
         "mobilenetv3large": "MobileNetV3Large", "efficientnetb0": "EfficientNetB0"}

cli.define_common("image_size", "eval_data_dir", image_size=224)
flags.DEFINE_list("backbones", ["mobilenetv2", "mobilenetv3small", "mobilenetv3large",
                                "efficientnetb0", "efficientnetlite0", "mnasnet_a1", "mnasnet_b1"],
                  "Backbones.")
flags.DEFINE_integer("calibration_images", 200, "int8 calibration images.")
flags.DEFINE_integer("runs", 50, "Timed invokes per round.")
flags.DEFINE_integer("rounds", 3, "Interleaved rounds per thread count (median of the rounds' "
                     "medians); more rounds steady the ratios on a shared machine.")
cli.show_in_help("Benchmark", "backbones", "calibration_images", "runs", "rounds")
FLAGS = flags.FLAGS


def _preprocessing_only(backbone, size):
    """A float32 file of the layers our backbone puts in front of the keras.applications
    network (e.g. MobileNetV2's x / 127.5 - 1): timed alone, an upper bound of what they add
    (it includes one invoke's fixed overhead)."""
    layers = [layer for layer in backbone.layers
              if not isinstance(layer, keras.layers.InputLayer) and not hasattr(layer, "layers")]
    x = inputs = keras.Input((size, size, 3))
    for layer in layers:
        x = layer(x)
    return tflite.convert(keras.Model(inputs, x), "float32")


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    size = FLAGS.image_size
    train, _ = labelled.folder_splits(FLAGS.eval_data_dir)
    source = sources.folder_source(os.path.join(FLAGS.eval_data_dir, "train"))
    calibration = sources.sample_images(source, FLAGS.calibration_images, size)
    print(f"image_size={size} runs={FLAGS.runs} rounds={FLAGS.rounds} "
          f"calibration_images={len(calibration)}")
    for name in FLAGS.backbones:
        keras.utils.set_random_seed(0)
        backbone = backbones.build_backbone(name)
        encoder = backbones.build_encoder(backbone, size)
        features.recalibrate(encoder, train, size, num_images=256)
        float32 = tflite.convert(encoder, "float32")
        int8 = tflite.convert(encoder, "int8", calibration)
        line = [f"{name}: float32_kb={len(float32) / 1024:.0f} int8_kb={len(int8) / 1024:.0f} "
                f"int8_size_ratio={len(int8) / len(float32):.3f}"]
        plain = prefix = None
        if name in PLAIN:
            net = getattr(keras.applications, PLAIN[name])(
                include_top=False, weights=None, pooling="avg", input_shape=(size, size, 3))
            plain = tflite.convert(net, "float32")
            extra = tflite.op_counts(float32)
            extra.subtract(tflite.op_counts(plain))
            line.append("extra_ops=" + (",".join(f"{op}:{n:+d}" for op, n in sorted(extra.items())
                                                 if n) or "none"))
            if +extra:
                prefix = _preprocessing_only(backbone, size)
                if tflite.op_counts(prefix) != +extra:  # then it would bound something else
                    line.append("(the extra ops are not just the input preprocessing: no bound)")
                    prefix = None
        for threads in (1, 2):
            # Interleaved rounds, median of the medians: the machine's noise hits all alike.
            rounds = {"float32": [], "int8": [], "plain": [], "plain_again": []}
            for _ in range(FLAGS.rounds):
                for key, model in (("float32", float32), ("int8", int8), ("plain", plain),
                                   ("plain_again", plain)):
                    if model is not None:
                        rounds[key].append(tflite.measure_latency(model, threads, FLAGS.runs)
                                           ["median_ms"])
            ms = {k: sorted(v)[len(v) // 2] for k, v in rounds.items() if v}
            line.append(f"{threads}thr: float32_ms={ms['float32']:.2f} int8_ms={ms['int8']:.2f} "
                        f"int8_latency_ratio={ms['int8'] / ms['float32']:.3f}")
            if "plain" in ms:
                line.append(f"plain_keras_ms={ms['plain']:.2f} "
                            f"export_vs_plain={ms['float32'] / ms['plain']:.3f} "
                            f"plain_a_a={ms['plain_again'] / ms['plain']:.3f}")
                if prefix is not None:  # the extra ops alone, as a bound the noise cannot hide
                    extra_ms = tflite.measure_latency(prefix, threads, 10 * FLAGS.runs)["median_ms"]
                    line.append(f"extra_ops_ms={extra_ms:.3f} "
                                f"export_vs_plain_bound={1 + extra_ms / ms['plain']:.3f}")
        print(" ".join(line), flush=True)


if __name__ == "__main__":
    cli.run(main, __doc__)
