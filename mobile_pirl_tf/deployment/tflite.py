"""Keras 3 encoder -> TFLite (LiteRT) flatbuffer, and host inference / latency with LiteRT.

Conversion goes through `tf.lite.TFLiteConverter.from_keras_model` restricted to TFLite builtin
ops (no Flex / SELECT_TF_OPS), so stock LiteRT runtimes and the XNNPACK delegate run every op.
Host inference uses `ai_edge_litert.interpreter.Interpreter` (XNNPACK on by default).
"""

import collections
import time

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from mobile_pirl_tf.core.config import VARIANTS  # the names live with the flags
from mobile_pirl_tf.core.output import framework_quiet


def converter_for(model):
    """A TFLiteConverter for a Keras (3, or tf_keras) model with a fixed input shape, builtin
    ops only, batch 1.

    Goes through the model's traced concrete function with its variables frozen to constants
    (passing the model as trackable object keeps them as resource variables, which int8
    calibration cannot read: "READ_VARIABLE failed to invoke"; `from_keras_model` also prints a
    SavedModel summary of every variable).
    """
    spec = tf.TensorSpec([1, *model.input.shape[1:]], tf.float32, name="pixels")

    @tf.autograph.experimental.do_not_convert
    def serve(pixels):
        return model(pixels, training=False)

    fn = tf.function(serve).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter



INT8_IO_TYPES = {"uint8": tf.uint8, "int8": tf.int8}


def convert(model, variant, representative_images=None, io_type="uint8"):
    """The flatbuffer of one export variant (builtin ops only):

    - float32: as trained;
    - float16: float16 weights (dequantized at load on CPU, used natively by GPU delegates);
    - dynamic: int8 weights, float activations quantized on the fly ("dynamic range");
    - int8 / qat_int8: full integer (weights and activations int8; input and output `io_type`),
      ranges calibrated on `representative_images` ([N, S, S, 3] float pixels in [0, 255]);
      for qat_int8, `model` is the quantization-aware-trained model, whose fake-quant ranges are
      used where it has them.
    """
    with framework_quiet():  # the converter's notes on stderr
        return _convert(model, variant, representative_images, io_type)


def _convert(model, variant, representative_images, io_type):
    converter = converter_for(model)
    if variant == "float32":
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if variant == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif variant in ("int8", "qat_int8"):
        if representative_images is None or len(representative_images) == 0:
            raise ValueError(f"{variant} needs representative images for calibration")
        images = np.asarray(representative_images, np.float32)

        def representative():
            for image in images:
                yield [image[None]]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = INT8_IO_TYPES[io_type]
        converter.inference_output_type = INT8_IO_TYPES[io_type]
    elif variant != "dynamic":
        raise ValueError(f"unknown variant {variant!r}; valid: {', '.join(VARIANTS)}")
    return converter.convert()


def run(model, images, num_threads=2):
    """Features [N, d] of float pixel images [N, S, S, 3], one invoke per image; quantized
    inputs are quantized and quantized outputs dequantized with the model's own parameters.
    `model` is a flatbuffer (bytes) or a ready interpreter (to reuse it over many batches)."""
    runner = interpreter(model, num_threads) if isinstance(model, bytes) else model
    inp, out = runner.get_input_details()[0], runner.get_output_details()[0]
    features = []
    for image in np.asarray(images, np.float32):
        x = image[None]
        if np.issubdtype(inp["dtype"], np.integer):
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        runner.set_tensor(inp["index"], x.astype(inp["dtype"]))
        runner.invoke()
        y = runner.get_tensor(out["index"]).astype(np.float32)
        if np.issubdtype(out["dtype"], np.integer):
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        features.append(y[0])
    return np.stack(features)


def interpreter(model_content, num_threads=1):
    """A ready LiteRT interpreter for a flatbuffer given as bytes."""
    runner = Interpreter(model_content=model_content, num_threads=num_threads)
    runner.allocate_tensors()
    return runner


def op_counts(model_content):
    """How many ops of each name a flatbuffer holds (Flex ops appear as 'FlexXxx' / custom)."""
    runner = Interpreter(model_content=model_content)
    return collections.Counter(op["op_name"] for op in runner._get_ops_details())


def op_names(model_content):
    """The distinct op names of a flatbuffer."""
    return sorted(op_counts(model_content))


def flex_ops(model_content):
    """Ops that stock LiteRT without the Flex delegate cannot run; empty for a clean export."""
    return [name for name in op_names(model_content)
            if name.startswith("Flex") or name in ("CUSTOM", "DELEGATE")]


def measure_latency(model_content, num_threads, runs=50, warmup=5, seed=0):
    """Per-invoke wall time in ms of one random input: median and p90 over `runs` after warm-up."""
    runner = interpreter(model_content, num_threads)
    detail = runner.get_input_details()[0]
    rng = np.random.default_rng(seed)
    if np.issubdtype(detail["dtype"], np.integer):
        info = np.iinfo(detail["dtype"])
        sample = rng.integers(info.min, info.max, detail["shape"], endpoint=True)
    else:
        sample = rng.uniform(0, 255, detail["shape"])
    runner.set_tensor(detail["index"], sample.astype(detail["dtype"]))
    for _ in range(warmup):
        runner.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.invoke()
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "runs": runs, "threads": num_threads}
