"""Linear probe / kNN of a frozen encoder, beside random-init and supervised baselines.

    python evaluate.py --model_dir=runs/pirl --data_dir=DATA --protocol=linear,knn
    python evaluate.py --encoder=PATH/encoder.keras --dataset=stl10
    python evaluate.py --baseline=random --backbone=mobilenetv3small --image_size=64 \
        --data_dir=DATA --output_dir=runs/random
    python evaluate.py --baseline=supervised --supervised_minutes=20 ...

DATA holds train/<class>/... and test/<class>/... Features are cached beside the encoder.
A PIRL model is reported beside its baselines in <output_dir>/baselines/: random init is
computed when missing (cheap); supervised when --supervised_epochs or --supervised_minutes is
given (or found there from an earlier run).
"""

import json
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from mobile_pirl_tf import UsageError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A train.py run folder (reads its encoder.keras).")
flags.DEFINE_string("encoder", None, "Path to an encoder.keras instead of --model_dir.")
flags.DEFINE_string("dataset", "stl10", "TFDS data set with train and test splits.")
flags.DEFINE_string("data_dir", None, "Folder with train/<class>/ and test/<class>/ (overrides "
                    "--dataset).")
flags.DEFINE_string("tfds_data_dir", None, "Where prepared TFDS data sets are.")
flags.DEFINE_list("protocol", ["linear"], "linear, knn, or both: linear,knn.")
flags.DEFINE_string("output_dir", None, "Where eval_<protocol>.json goes (default: the model_dir, "
                    "or the encoder's folder).")
flags.DEFINE_enum("baseline", None, ["random", "supervised"], "Evaluate a baseline instead of a "
                  "trained encoder (needs --backbone, --image_size, --output_dir).")
flags.DEFINE_string("backbone", None, "Backbone of a baseline.")
flags.DEFINE_integer("image_size", None, "Baseline input size; for an encoder, a check.")
flags.DEFINE_float("width", 1.0, "Baseline width multiplier.")
flags.DEFINE_integer("supervised_epochs", 0, "Supervised baseline epochs (an upper bound when "
                     "--supervised_minutes is set).")
flags.DEFINE_float("supervised_minutes", 0, "Supervised baseline time budget in minutes.")
flags.DEFINE_integer("supervised_batch_size", 64, "Supervised baseline batch size.")
flags.DEFINE_integer("seed", 0, "Seed for baselines and the linear probe.")


def _baseline_encoder(kind, backbone, image_size, width, train, output_dir, seed):
    """Builds (or reuses, when output_dir holds the same baseline) a baseline encoder."""
    import keras

    from mobile_pirl_tf import baselines, backbones

    backbones.check_backbone(backbone, width)
    spec = {"baseline": kind, "backbone": backbone, "image_size": image_size, "width": width,
            "seed": seed, "data": train.name}
    if kind == "supervised":
        spec.update(epochs=FLAGS.supervised_epochs, minutes=FLAGS.supervised_minutes,
                    batch_size=FLAGS.supervised_batch_size)
    path, spec_path = (os.path.join(output_dir, n) for n in ("encoder.keras", "baseline.json"))
    if os.path.exists(spec_path):
        with open(spec_path) as f:
            stored = json.load(f)
        if {k: stored.get(k) for k in spec} == spec and os.path.exists(path):
            return keras.models.load_model(path), path
    if os.path.exists(path):
        raise UsageError(f"--output_dir={output_dir} already holds another encoder.keras; "
                         "use a new --output_dir")
    if kind == "random":
        encoder, info = baselines.random_encoder(backbone, image_size, width, seed), {}
    else:
        if not (FLAGS.supervised_epochs or FLAGS.supervised_minutes):
            raise UsageError("--baseline=supervised needs --supervised_epochs=N or "
                             "--supervised_minutes=M")
        encoder, info = baselines.supervised_encoder(
            backbone, image_size, train, epochs=FLAGS.supervised_epochs or 10_000,
            budget_seconds=FLAGS.supervised_minutes * 60 or None,
            batch_size=FLAGS.supervised_batch_size, width=width, seed=seed)
    os.makedirs(output_dir, exist_ok=True)
    encoder.save(path)
    with open(spec_path, "w") as f:
        json.dump({**spec, **info}, f, indent=2)
    return encoder, path


def run(argv):
    from mobile_pirl_tf import evaluation

    if len(argv) > 1:
        raise UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    for p in FLAGS.protocol:
        if p not in evaluation.PROTOCOLS:
            raise UsageError(f"--protocol must be among {', '.join(evaluation.PROTOCOLS)}, got {p!r}")
    if FLAGS.baseline:
        missing = [f"--{n}" for n in ("backbone", "image_size", "output_dir") if not FLAGS[n].value]
        if missing:
            raise UsageError(f"--baseline={FLAGS.baseline} needs {', '.join(missing)}")
    elif not (FLAGS.model_dir or FLAGS.encoder):
        raise UsageError("pass --model_dir=DIR (a train.py run), --encoder=PATH, or --baseline")
    train, test = evaluation.labelled_splits(FLAGS.dataset, FLAGS.data_dir, FLAGS.tfds_data_dir)

    if FLAGS.baseline:
        encoder, path = _baseline_encoder(FLAGS.baseline, FLAGS.backbone, FLAGS.image_size,
                                          FLAGS.width, train, FLAGS.output_dir, FLAGS.seed)
        output_dir, label = FLAGS.output_dir, FLAGS.baseline
    else:
        encoder, path = evaluation.load_encoder(FLAGS.model_dir, FLAGS.encoder)
        size = evaluation.encoder_image_size(encoder)
        if FLAGS.image_size and FLAGS.image_size != size:
            raise UsageError(f"--image_size={FLAGS.image_size} does not match the encoder's input "
                             f"size {size}; drop the flag or pass the matching encoder")
        output_dir = FLAGS.output_dir or FLAGS.model_dir or os.path.dirname(os.path.abspath(path))
        label = "pirl"

    reports = []
    for protocol in FLAGS.protocol:
        reports.append(evaluation.evaluate_encoder(encoder, path, train, test, protocol, output_dir,
                                                   FLAGS.seed, label=label))
        if not FLAGS.baseline:
            reports += _baseline_reports(encoder, path, train, test, protocol, output_dir)
    print(evaluation.format_table(reports))
    for protocol in FLAGS.protocol:
        rows = {r["label"]: r["top1"] for r in reports if r["protocol"] == protocol}
        if {"pirl", "random", "supervised"} <= set(rows) and rows["supervised"] != rows["random"]:
            gap = evaluation.gap_closed(rows["pirl"], rows["random"], rows["supervised"])
            print(f"{protocol}: gap_closed=(pirl - random) / (supervised - random) = {gap:.3f}")


def _baseline_reports(encoder, encoder_path, train, test, protocol, output_dir):
    """Random-init (computed when missing) and supervised (when asked or present) rows, for the
    backbone named in the run's config.json."""
    from mobile_pirl_tf import evaluation

    config_path = os.path.join(os.path.dirname(os.path.abspath(encoder_path)), "config.json")
    if not os.path.exists(config_path):
        print(f"(baselines skipped: no config.json beside {encoder_path} names the backbone; "
              "run evaluate.py --baseline=... yourself)")
        return []
    with open(config_path) as f:
        config = json.load(f)
    asked = bool(FLAGS.supervised_epochs or FLAGS.supervised_minutes)
    reports = []
    for kind in ("random", "supervised"):
        base_dir = os.path.join(output_dir, "baselines", kind)
        present = os.path.exists(os.path.join(base_dir, "encoder.keras"))
        if kind == "supervised" and not asked:
            if not present:
                print(f"(supervised baseline not run: pass --supervised_minutes=M or "
                      f"--supervised_epochs=N to compute it into {base_dir})")
                continue
            base_encoder, path = evaluation.load_encoder(base_dir)  # from an earlier run
        else:
            base_encoder, path = _baseline_encoder(
                kind, config["backbone"], evaluation.encoder_image_size(encoder),
                config.get("width", 1.0), train, base_dir, FLAGS.seed)
        reports.append(evaluation.evaluate_encoder(base_encoder, path, train, test, protocol,
                                                   base_dir, FLAGS.seed, label=kind))
    return reports


def main(argv):
    logging.getLogger().setLevel(logging.INFO)
    try:
        run(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
