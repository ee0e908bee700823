"""What a PIRL training step costs: overhead over a plain step, training images/s of the default
recipe against the paper's, input-pipeline headroom and memory-bank scaling.

    python benchmarks/pirl_overhead.py [--backbone=mobilenetv3small --image_size=64]

Prints, all measured in this one run (median of --repeats timed rounds of --steps steps, the
compared steps interleaved so machine drift hits both):

  pirl_overhead_ratio   PIRL train step with the default recipe / a reference step running the
                        same forward and backward pass (backbone + heads, same image and patch
                        tensors, same optimizer) with a trivial loss and no memory bank
                        (target <= 1.25); also for the paper's recipe (`--recipe=paper`)
  training_images_per_second
                        images/s of whole training steps fed by the real input pipeline
                        (decode, views, step): the default recipe (decoded images kept in
                        memory, as train.py does when they fit), the same decoding every
                        epoch, and the paper's recipe (`--recipe=paper`, as the defaults were
                        before), each at its own batch size; ratio = default / paper
                        (target >= 3)
  pipeline_headroom     input pipeline alone (images/s, real images) / train step alone
  bank_scaling_ratio    step time with a 1,281,167-row bank / with a 10,000-row bank, same
                        number of negatives                                   (target <= 1.10)
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from mobile_pirl_tf.core import cli, config  # noqa: E402
from mobile_pirl_tf.data import pipeline, sources, transforms  # noqa: E402
from mobile_pirl_tf.training import fit as training  # noqa: E402

cli.define_common("backbone", "image_size", "data_dir")
flags.DEFINE_integer("steps", 10, "Steps per timed round.")
flags.DEFINE_integer("repeats", 5, "Timed rounds (median reported).")
flags.DEFINE_integer("fed_steps", 12, "Steps timed for the training images/s (after 3 warm-up "
                     "steps), per recipe.")
flags.DEFINE_integer("scaling_negatives", 4096, "Negatives for the bank-scaling comparison "
                     "(the same for both bank sizes; must be < 10,000).")
cli.show_in_help("Benchmark", "steps", "repeats", "fed_steps", "scaling_negatives")
FLAGS = flags.FLAGS

IMAGENET_ROWS = 1_281_167


def recipe_config(recipe, **overrides):
    return config.TrainConfig.from_recipe(recipe, backbone=FLAGS.backbone,
                                          image_size=FLAGS.image_size, **overrides)


def make_model(train_config, num_examples):
    model = training.build_pirl(train_config, num_examples)
    training.set_schedule(model, train_config, 10_000)
    training.build_variables(model, train_config)
    return model


def synthetic(train_config, num_examples):
    return pipeline.synthetic_batch(train_config.batch_size, train_config.image_size,
                                    num_examples)


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


def fed_images_per_second(train_config, source, cache=None):
    """Images/s of train steps fed by the real pipeline (both share the CPU, as in training)."""
    model = make_model(train_config, source.num_examples)
    steps_per_epoch = source.num_examples // train_config.batch_size
    batches = iter(pipeline.pretraining_dataset(
        source, train_config.image_size, train_config.batch_size, steps_per_epoch,
        train_config.seed, names=train_config.transform_names(),
        params=train_config.transform_params(), cache=cache))
    step = tf.function(model.train_step)
    for _ in range(3):
        float(step(next(batches))["loss"])
    start = time.perf_counter()
    for _ in range(FLAGS.fed_steps):
        out = step(next(batches))
    float(out["loss"])
    return FLAGS.fed_steps * train_config.batch_size / (time.perf_counter() - start)


def pipeline_images_per_second(train_config, source):
    ds = pipeline.pretraining_dataset(source, train_config.image_size, train_config.batch_size,
                                      source.num_examples // train_config.batch_size, seed=0,
                                      names=train_config.transform_names(),
                                      params=train_config.transform_params())
    it = iter(ds)
    for _ in range(5):
        next(it)
    n = 20
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    return n * train_config.batch_size / (time.perf_counter() - start)


def main(argv):
    del argv
    default, paper = recipe_config("default"), recipe_config("paper")
    print(f"backbone={FLAGS.backbone} image_size={FLAGS.image_size} "
          f"batch default={default.batch_size} paper={paper.batch_size} "
          f"patch_input={transforms.jigsaw_geometry(FLAGS.image_size).patch_input} "
          f"cores={os.cpu_count()} tf={tf.__version__}")

    # 1. Overhead of each recipe's step over the plain forward+backward, ImageNet-size bank.
    for name, train_config in (("default", default), ("paper", paper)):
        model = make_model(train_config, IMAGENET_ROWS)
        batch = synthetic(train_config, IMAGENET_ROWS)
        t = interleaved({"pirl": (tf.function(model.train_step), batch),
                         "reference": (reference_step(model), batch)})
        print(f"{name}: step_seconds pirl={t['pirl']:.4f} reference={t['reference']:.4f} "
              f"pirl_overhead_ratio={t['pirl'] / t['reference']:.3f} (loss={train_config.loss} "
              f"K={train_config.num_negatives} shared={train_config.shared_negatives} "
              f"batch={train_config.batch_size})", flush=True)
        if name == "default":
            step_images_per_second = train_config.batch_size / t["pirl"]
        del model

    # 2. Bank scaling: same K, 1,281,167 rows against 10,000 rows.
    k = FLAGS.scaling_negatives
    scaled = recipe_config("default", num_negatives=k)
    big, small = make_model(scaled, IMAGENET_ROWS), make_model(scaled, 10_000)
    s = interleaved({"big": (tf.function(big.train_step), synthetic(scaled, IMAGENET_ROWS)),
                     "small": (tf.function(small.train_step), synthetic(scaled, 10_000))})
    print(f"step_seconds bank_1281167={s['big']:.4f} bank_10000={s['small']:.4f} (K={k}) "
          f"bank_scaling_ratio={s['big'] / s['small']:.3f}", flush=True)
    del big, small

    # 3. With real images: whole training steps, and the pipeline alone.
    if not os.path.isdir(FLAGS.data_dir):
        print(f"training_images_per_second=skipped: no images at {FLAGS.data_dir}")
        return
    source = sources.folder_source(FLAGS.data_dir)
    cache = pipeline.image_cache(source)
    fed = {"default": fed_images_per_second(default, source, cache),
           "default_decoding": fed_images_per_second(default, source),
           "paper": fed_images_per_second(paper, source)}
    print(f"training_images_per_second default={fed['default']:.1f} "
          f"default_decoding_every_epoch={fed['default_decoding']:.1f} "
          f"paper={fed['paper']:.1f} ratio={fed['default'] / fed['paper']:.2f} "
          f"(images in memory: {'yes' if cache else 'no'})", flush=True)
    alone = pipeline_images_per_second(default, source)
    print(f"images_per_second pipeline={alone:.1f} train_step={step_images_per_second:.1f} "
          f"pipeline_headroom={alone / step_images_per_second:.2f}")


if __name__ == "__main__":
    cli.run(main, __doc__)
