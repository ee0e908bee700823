"""PIRL step overhead, input-pipeline headroom and memory-bank scaling.

    python benchmarks/pirl_overhead.py [--backbone=mobilenetv3small --image_size=96 --batch_size=32]

Prints, all measured in this one run (median of --repeats timed rounds of --steps steps, the
compared steps interleaved so machine drift hits both):

  pirl_overhead_ratio   full PIRL train step / a reference step running the same forward and
                        backward pass (backbone + heads, same image and patch tensors, same
                        optimizer) with a trivial loss and no memory bank     (target <= 1.10)
  pipeline_headroom     input pipeline alone (images/s, real JPEGs) / train step alone
                        (images/s)                                            (target >= 3)
  bank_scaling_ratio    step time with a 1,281,167-row bank / with a 10,000-row bank, same
                        number of negatives                                   (target <= 1.10)
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from mobile_pirl_tf import cli, config, data, pipeline, training, transforms  # noqa: E402

cli.define_common("backbone", "image_size", "data_dir", image_size=96)
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_integer("steps", 10, "Steps per timed round.")
flags.DEFINE_integer("repeats", 5, "Timed rounds (median reported).")
flags.DEFINE_integer("scaling_negatives", 4096, "Negatives for the bank-scaling comparison "
                     "(the same for both bank sizes; must be < 10,000).")
cli.show_in_help("Benchmark", "batch_size", "steps", "repeats", "scaling_negatives")
FLAGS = flags.FLAGS

IMAGENET_ROWS = 1_281_167


def make_batch(num_examples):
    return pipeline.synthetic_batch(FLAGS.batch_size, FLAGS.image_size, num_examples)


def make_model(num_examples, **overrides):
    train_config = config.TrainConfig(backbone=FLAGS.backbone, image_size=FLAGS.image_size,
                                      batch_size=FLAGS.batch_size, **overrides)
    model = training.build_pirl(train_config, num_examples)
    training.set_schedule(model, train_config, 10_000)
    training.build_variables(model, train_config)
    return model


def pirl_step(model):
    return tf.function(model.train_step)


def reference_step(model):
    """The same forward and backward pass with a trivial loss, no bank, no negatives."""
    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            z_image, z_jigsaw = model(batch, training=True)
            loss = tf.reduce_mean(z_image) + tf.reduce_mean(z_jigsaw)
        variables = model.trainable_variables
        model.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss
    return step


def time_round(step, batch):
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        out = step(batch)
    tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
    return (time.perf_counter() - start) / FLAGS.steps


def interleaved(named_steps):
    """{name: median seconds per step}, rounds interleaved across the steps."""
    for step, batch in named_steps.values():  # warm-up: tracing and first runs
        step(batch)
        step(batch)
    times = {name: [] for name in named_steps}
    for _ in range(FLAGS.repeats):
        for name, (step, batch) in named_steps.items():
            times[name].append(time_round(step, batch))
    return {name: statistics.median(t) for name, t in times.items()}


def pipeline_images_per_second():
    source = data.folder_source(FLAGS.data_dir)
    ds = pipeline.pretraining_dataset(source, FLAGS.image_size, FLAGS.batch_size,
                                      source.num_examples // FLAGS.batch_size, seed=0)
    it = iter(ds)
    for _ in range(5):
        next(it)
    n = 40
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    return n * FLAGS.batch_size / (time.perf_counter() - start)


def main(argv):
    del argv
    print(f"backbone={FLAGS.backbone} image_size={FLAGS.image_size} batch={FLAGS.batch_size} "
          f"patch_input={transforms.jigsaw_geometry(FLAGS.image_size).patch_input} "
          f"cores={os.cpu_count()} tf={tf.__version__}")

    # 1. PIRL overhead at the default recipe (32,000 per-example negatives), ImageNet-size bank.
    default = make_model(IMAGENET_ROWS)
    shared = make_model(IMAGENET_ROWS, shared_negatives=True)
    batch = make_batch(IMAGENET_ROWS)
    t = interleaved({"pirl": (pirl_step(default), batch), "pirl_shared": (pirl_step(shared), batch),
                     "reference": (reference_step(default), batch)})
    print(f"step_seconds pirl={t['pirl']:.4f} pirl_shared_negatives={t['pirl_shared']:.4f} "
          f"reference={t['reference']:.4f}")
    print(f"pirl_overhead_ratio={t['pirl'] / t['reference']:.3f}  (per-example negatives, K=32000)")
    print(f"pirl_overhead_ratio_shared_negatives={t['pirl_shared'] / t['reference']:.3f}")
    step_images_per_second = {"per_example": FLAGS.batch_size / t["pirl"],
                              "shared": FLAGS.batch_size / t["pirl_shared"]}
    del shared

    # 2. Bank scaling: same K, 1,281,167 rows against 10,000 rows.
    k = FLAGS.scaling_negatives
    big, small = make_model(IMAGENET_ROWS, num_negatives=k), make_model(10_000, num_negatives=k)
    s = interleaved({"big": (pirl_step(big), make_batch(IMAGENET_ROWS)),
                     "small": (pirl_step(small), make_batch(10_000))})
    print(f"step_seconds bank_1281167={s['big']:.4f} bank_10000={s['small']:.4f} (K={k})")
    print(f"bank_scaling_ratio={s['big'] / s['small']:.3f}")
    del big, small

    # 3. Input pipeline alone against the train step alone.
    if not os.path.isdir(FLAGS.data_dir):
        print(f"pipeline_headroom=skipped: no images at {FLAGS.data_dir}")
        return
    pipeline_speed = pipeline_images_per_second()
    print(f"images_per_second pipeline={pipeline_speed:.1f} "
          f"train_step={step_images_per_second['per_example']:.1f} "
          f"train_step_shared_negatives={step_images_per_second['shared']:.1f}")
    print(f"pipeline_headroom={pipeline_speed / step_images_per_second['per_example']:.2f}")
    print(f"pipeline_headroom_shared_negatives="
          f"{pipeline_speed / step_images_per_second['shared']:.2f}")


if __name__ == "__main__":
    cli.run(main, __doc__)
