"""Linear probe / kNN of a frozen encoder, beside random-init and supervised baselines.

    python evaluate.py --model_dir=runs/pirl --data_dir=DATA --protocol=linear,knn
    python evaluate.py --encoder=PATH/encoder.keras --dataset=stl10
    python evaluate.py --baseline=random --backbone=mobilenetv3small --image_size=64 \\
        --data_dir=DATA --output_dir=runs/random
    python evaluate.py --baseline=supervised --supervised_minutes=20 ...
    python evaluate.py --model_dir=runs/pirl --data_dir=DATA --protocol=finetune \\
        --label_fraction=0.01,0.1        # few labels: fine-tuned vs from scratch

DATA holds train/<class>/... and test/<class>/... (or val/<class>/...). Features are cached
in <output_dir>/features (output_dir defaults to the model folder; only it is written).
A PIRL model is reported beside its baselines in <output_dir>/baselines/: random init is
computed when missing (cheap); supervised when --supervised_epochs or --supervised_minutes is
given (or found there from an earlier run).
"""

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mobile_pirl_tf.core import cli, config, eval_config, paths, records  # noqa: E402 - TensorFlow is imported in main
from mobile_pirl_tf.core.errors import UsageError  # noqa: E402 - TensorFlow is imported in main

cli.define_flags(eval_config.EvalConfig)


def _baseline_encoder(kind, backbone, image_size, width, train, output_dir, cfg):
    """Builds (or reuses, when output_dir holds the same baseline) a baseline encoder."""
    import keras

    from mobile_pirl_tf.evaluation import baselines

    config.check_backbone(backbone, width)
    spec = {"baseline": kind, "backbone": backbone, "image_size": image_size, "width": width,
            "seed": cfg.seed, "data": train.name}
    if kind == "supervised":
        spec.update(epochs=cfg.supervised_epochs, minutes=cfg.supervised_minutes,
                    batch_size=cfg.supervised_batch_size)
    path, spec_path = (os.path.join(output_dir, n) for n in ("encoder.keras", "baseline.json"))
    try:
        stored = records.read_json(spec_path, {})
    except records.DamagedRecord as e:  # what the encoder beside it is cannot be known: redo
        logging.warning("%s; set aside with the encoder beside it, the %s baseline is computed "
                        "again", e, kind)
        records.set_aside(spec_path)
        if os.path.exists(path):
            records.set_aside(path)
        stored = {}
    # What was asked for decides reuse; what training did (epochs run in a time budget, ...)
    # is kept apart under "trained" (older files mixed it in: their "epochs" was the count run).
    asked = stored.get("asked", stored)
    if {k: asked.get(k) for k in spec} == spec and os.path.exists(path):
        try:
            return keras.models.load_model(path), path
        except Exception as e:  # noqa: BLE001 - a damaged file, whatever Keras raises
            logging.warning("%s is damaged (%s); set aside as %s, the %s baseline is computed "
                            "again", path, type(e).__name__, records.set_aside(path), kind)
    if os.path.exists(path):
        raise UsageError(f"--output_dir={output_dir} already holds another encoder.keras "
                         f"(a {asked.get('baseline', '?')} baseline of other settings: "
                         f"{spec_path}); use a new --output_dir or remove that folder")
    if kind == "random":
        encoder, info = baselines.random_encoder(backbone, image_size, width, cfg.seed), {}
    else:
        if not cfg.supervised_asked():
            raise UsageError("--baseline=supervised needs --supervised_epochs=N or "
                             "--supervised_minutes=M")
        encoder, info = baselines.supervised_encoder(
            backbone, image_size, train, epochs=cfg.supervised_epochs or 10_000,
            budget_seconds=cfg.supervised_minutes * 60 or None,
            batch_size=cfg.supervised_batch_size, width=width, seed=cfg.seed)
    os.makedirs(output_dir, exist_ok=True)
    with records.atomic_path(path) as tmp:
        encoder.save(tmp)
    records.write_json(spec_path, {"asked": spec, "trained": info})
    return encoder, path


def _evaluate(encoder, path, train, test, protocol, output_dir, cfg, label, suffix=""):
    """One protocol's report, with the protocol's batch-norm handling (`probes.protocol_bn_images`)
    unless --bn_recalibration_images overrides it."""
    from mobile_pirl_tf.evaluation import probes

    if cfg.bn_recalibration_images is None:
        bn_images = probes.protocol_bn_images(path, label)
    else:
        bn_images = cfg.bn_recalibration_images
        suffix += f"_bn{cfg.bn_recalibration_images}"
    # Features are cached under the output folder: a model folder is only read.
    return probes.evaluate_encoder(encoder, path, train, test, protocol, output_dir, cfg.seed,
                                   cache_dir=os.path.join(output_dir, "features"), label=label,
                                   bn_images=bn_images, file_suffix=suffix)


def _run_config(encoder_path):
    """The config.json of the train.py run that wrote the encoder ({} when there is none)."""
    folder = os.path.dirname(os.path.abspath(encoder_path))
    return records.read_json(os.path.join(folder, "config.json"), {})


def _finetune(path, size, train, test, output_dir, cfg):
    """eval_finetune.json: each fraction fine-tuned, beside the backbone from scratch."""
    import keras

    from mobile_pirl_tf.evaluation import finetune

    fractions = finetune.parse_fractions(cfg.label_fraction or eval_config.FINETUNE_FRACTIONS)
    for fraction in fractions:  # every error before any training
        finetune.label_subset(train, fraction, cfg.seed)
    run = _run_config(path)
    backbone, width = cfg.backbone or run.get("backbone"), run.get("width", cfg.width)
    if not backbone:
        raise UsageError("--protocol=finetune trains the backbone from scratch beside the "
                         "encoder: pass --backbone (no config.json beside the encoder names it)")
    recipe = finetune.FINETUNE_RECIPE
    if cfg.finetune_steps:
        recipe = {**recipe, "min_steps": cfg.finetune_steps, "epochs": 0}
    report = finetune.fine_tune_report(
        lambda: keras.models.load_model(path), finetune.scratch_builder(backbone, size, width,
                                                                        cfg.seed),
        train, test, fractions, cfg.seed, recipe)
    supervised = records.read_json(os.path.join(output_dir, "baselines", "supervised",
                                                "eval_linear.json"))
    if supervised:
        report["supervised_all_labels_linear_top1"] = supervised["top1"]
    report.update(encoder=os.path.abspath(path), backbone=backbone, image_size=size,
                  data=train.name.rsplit(":", 1)[0])
    os.makedirs(output_dir, exist_ok=True)
    records.write_json(os.path.join(output_dir, "eval_finetune.json"), report)
    print(finetune.format_table(report))
    return report


def _baseline_reports(encoder, encoder_path, train, test, protocol, output_dir, cfg):
    """Random-init (computed when missing) and supervised (when asked or present) rows, for the
    backbone named in the run's config.json."""
    from mobile_pirl_tf.models import backbones

    run_config = _run_config(encoder_path)
    if not run_config:
        print(f"(baselines skipped: no config.json beside {encoder_path} names the backbone; "
              "run evaluate.py --baseline=... yourself)")
        return []
    reports = []
    for kind in eval_config.BASELINES:
        base_dir = os.path.join(output_dir, "baselines", kind)
        present = os.path.exists(os.path.join(base_dir, "encoder.keras"))
        if kind == "supervised" and not cfg.supervised_asked():
            if not present:
                print(f"(supervised baseline not run: pass --supervised_minutes=M or "
                      f"--supervised_epochs=N to compute it into {base_dir})")
                continue
            base_encoder, path = backbones.load_encoder(base_dir)  # from an earlier run
        else:
            base_encoder, path = _baseline_encoder(
                kind, run_config["backbone"], backbones.encoder_image_size(encoder),
                run_config.get("width", 1.0), train, base_dir, cfg)
        reports.append(_evaluate(base_encoder, path, train, test, protocol, base_dir, cfg, kind))
    return reports


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    cfg = cli.config_from_flags(eval_config.EvalConfig).validate()
    from mobile_pirl_tf.data import labelled
    from mobile_pirl_tf.evaluation import probes
    from mobile_pirl_tf.models import backbones

    train, test = labelled.labelled_splits(cfg.dataset, cfg.data_dir, cfg.tfds_data_dir,
                                           cfg.tfds_manual_dir)
    if cfg.baseline:
        encoder, path = _baseline_encoder(cfg.baseline, cfg.backbone, cfg.image_size, cfg.width,
                                          train, cfg.output_dir, cfg)
        output_dir, label = cfg.output_dir, cfg.baseline
    else:
        encoder, path = backbones.load_encoder(cfg.model_dir, cfg.encoder)
        size = backbones.encoder_image_size(encoder)
        if cfg.image_size and cfg.image_size != size:
            raise UsageError(f"--image_size={cfg.image_size} does not match the encoder's input "
                             f"size {size}; drop the flag or pass the matching encoder")
        output_dir = cfg.output_dir or cfg.model_dir or os.path.dirname(os.path.abspath(path))
        label = "pirl"
    paths.writable_dir(output_dir, "--output_dir" if cfg.output_dir else
                       "--output_dir (default: the model folder)")

    from mobile_pirl_tf.evaluation import finetune

    reports = []
    fractions = finetune.parse_fractions(cfg.label_fraction or (1.0,))
    for protocol in cfg.protocol:
        if protocol == "finetune":
            _finetune(path, backbones.encoder_image_size(encoder), train, test, output_dir, cfg)
            continue
        for fraction in fractions:
            subset = finetune.label_subset(train, fraction, cfg.seed)
            suffix = "" if fraction == 1 else f"_labels{fraction:g}"
            reports.append(_evaluate(encoder, path, subset, test, protocol, output_dir, cfg,
                                     label, suffix))
            if not cfg.baseline and fraction == 1:
                reports += _baseline_reports(encoder, path, subset, test, protocol, output_dir,
                                             cfg)
    if reports:
        print(probes.format_table(reports))
    for protocol in cfg.protocol:
        rows = {r["label"]: r["top1"] for r in reports if r["protocol"] == protocol}
        if {"pirl", "random", "supervised"} <= set(rows) and rows["supervised"] != rows["random"]:
            gap = probes.gap_closed(rows["pirl"], rows["random"], rows["supervised"])
            print(f"{protocol}: gap_closed=(pirl - random) / (supervised - random) = {gap:.3f}")


if __name__ == "__main__":
    cli.run(main, __doc__)
