"""Stage D's costs of a backbone: parameters, multiply-adds, LiteRT file sizes and host latency
(float32 and post-training int8, 1 thread, median of 50 invokes), and phone latency from
`export/benchmark_phone.py` results. The architecture fixes them, not the weights, so they are
measured once per backbone and size (on a random-init encoder) and cached."""

import os

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.core.records import DamagedRecord, read_json, set_aside, write_json
from mobile_pirl_tf.study.cells import clear_session


def footprint_path(output_dir, backbone, image_size):
    """Where a study in output_dir caches a backbone's stage-D row."""
    return os.path.join(output_dir, "footprints", f"{backbone}-{image_size}px.json")


def backbone_footprint(backbone, image_size, source, output_dir, phone_results=(), log=print):
    """The stage-D row of a backbone: {params, macs, float32_bytes, int8_bytes, float32_ms,
    int8_ms[, phone_int8_ms]}, cached in output_dir/footprints/<backbone>-<size>px.json."""
    path = footprint_path(output_dir, backbone, image_size)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        row = read_json(path)
    except DamagedRecord as e:
        log(f"warning: {e}; set aside as {set_aside(path)}, measured again")
        row = None
    if row is None:
        from mobile_pirl_tf.data import sources
        from mobile_pirl_tf.deployment import complexity, tflite
        from mobile_pirl_tf.models import backbones

        log(f"[stage D] {backbone}: converting and timing")
        encoder = backbones.build_encoder(backbones.build_backbone(backbone), image_size)
        calibration = sources.sample_images(source, 200, image_size, seed=0)
        row = {"params": encoder.count_params(),
               "macs": complexity.count_macs(encoder, image_size)}
        for variant in ("float32", "int8"):
            flatbuffer = tflite.convert(encoder, variant, calibration)
            row[f"{variant}_bytes"] = len(flatbuffer)
            row[f"{variant}_ms"] = tflite.measure_latency(flatbuffer, 1, runs=50)["median_ms"]
        write_json(path, row)
        clear_session()
    row = dict(row)
    phone = phone_latency(phone_results).get((backbone, "int8"))
    if phone is not None:
        row["phone_int8_ms"] = phone
    return row


def phone_latency(json_paths):
    """{(backbone, variant): inference_avg_ms} of export/benchmark_phone.py results: the variant
    is the timed file's name (int8.tflite -> int8), the backbone the one named in the
    report.json that export/to_tflite.py wrote beside it."""
    out = {}
    for json_path in json_paths:
        result = read_json(json_path)
        if result is None:
            raise UsageError(f"--phone_results={json_path}: no such file")
        model = result.get("model", "")
        report = read_json(os.path.join(os.path.dirname(model), "report.json"))
        if report is None:
            raise UsageError(f"--phone_results={json_path}: no report.json beside {model} names "
                             "its backbone; time files that export/to_tflite.py wrote")
        variant = os.path.splitext(os.path.basename(model))[0]
        out[(report.get("backbone"), variant)] = result["inference_avg_ms"]
    return out
