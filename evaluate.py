"""Linear probe / kNN of a frozen encoder, beside random-init and supervised baselines.

    python evaluate.py --model_dir=runs/pirl --data_dir=DATA --protocol=linear,knn
    python evaluate.py --encoder=PATH/encoder.keras --dataset=stl10
    python evaluate.py --baseline=random --backbone=mobilenetv3small --image_size=64 \\
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mobile_pirl_tf import UsageError, cli, config  # noqa: E402 - TensorFlow is imported in main

cli.define_flags(config.EvalConfig)


def _baseline_encoder(kind, backbone, image_size, width, train, output_dir, cfg):
    """Builds (or reuses, when output_dir holds the same baseline) a baseline encoder."""
    import keras

    from mobile_pirl_tf import baselines

    config.check_backbone(backbone, width)
    spec = {"baseline": kind, "backbone": backbone, "image_size": image_size, "width": width,
            "seed": cfg.seed, "data": train.name}
    if kind == "supervised":
        spec.update(epochs=cfg.supervised_epochs, minutes=cfg.supervised_minutes,
                    batch_size=cfg.supervised_batch_size)
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
    encoder.save(path)
    with open(spec_path, "w") as f:
        json.dump({**spec, **info}, f, indent=2)
    return encoder, path


def _evaluate(encoder, path, train, test, protocol, output_dir, cfg, label):
    """One protocol's report, with the protocol's batch-norm handling (`probes.protocol_bn_images`)
    unless --bn_recalibration_images overrides it."""
    from mobile_pirl_tf import probes

    if cfg.bn_recalibration_images is None:
        bn_images, suffix = probes.protocol_bn_images(path, label), ""
    else:
        bn_images, suffix = cfg.bn_recalibration_images, f"_bn{cfg.bn_recalibration_images}"
    return probes.evaluate_encoder(encoder, path, train, test, protocol, output_dir, cfg.seed,
                                   label=label, bn_images=bn_images, file_suffix=suffix)


def _baseline_reports(encoder, encoder_path, train, test, protocol, output_dir, cfg):
    """Random-init (computed when missing) and supervised (when asked or present) rows, for the
    backbone named in the run's config.json."""
    from mobile_pirl_tf import backbones

    config_path = os.path.join(os.path.dirname(os.path.abspath(encoder_path)), "config.json")
    if not os.path.exists(config_path):
        print(f"(baselines skipped: no config.json beside {encoder_path} names the backbone; "
              "run evaluate.py --baseline=... yourself)")
        return []
    with open(config_path) as f:
        run_config = json.load(f)
    reports = []
    for kind in config.BASELINES:
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
    cfg = cli.config_from_flags(config.EvalConfig).validate()
    from mobile_pirl_tf import backbones, data, probes

    train, test = data.labelled_splits(cfg.dataset, cfg.data_dir, cfg.tfds_data_dir)
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

    reports = []
    for protocol in cfg.protocol:
        reports.append(_evaluate(encoder, path, train, test, protocol, output_dir, cfg, label))
        if not cfg.baseline:
            reports += _baseline_reports(encoder, path, train, test, protocol, output_dir, cfg)
    print(probes.format_table(reports))
    for protocol in cfg.protocol:
        rows = {r["label"]: r["top1"] for r in reports if r["protocol"] == protocol}
        if {"pirl", "random", "supervised"} <= set(rows) and rows["supervised"] != rows["random"]:
            gap = probes.gap_closed(rows["pirl"], rows["random"], rows["supervised"])
            print(f"{protocol}: gap_closed=(pirl - random) / (supervised - random) = {gap:.3f}")


if __name__ == "__main__":
    cli.run(main, __doc__)
