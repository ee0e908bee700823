"""The backbone zoo: every backbone builds at 32-96 px with its documented feature dimension,
takes a PIRL train step, and round-trips through .keras; the multiply-add counter against a
hand count; the Table I command at small scale."""

import csv
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny

from mobile_pirl_tf.data import transforms
from mobile_pirl_tf.deployment import complexity
from mobile_pirl_tf.models import backbones
from mobile_pirl_tf.training import fit as training

FEATURE_DIM = {"resnet50": 2048, "mobilenetv2": 1280, "mobilenetv3small": 576,
               "mobilenetv3large": 960, "efficientnetb0": 1280, "efficientnetlite0": 1280,
               "mnasnet_a1": 1280, "mnasnet_b1": 1280}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_backbone_is_documented_here():
    assert set(FEATURE_DIM) == set(backbones.BACKBONES)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "resnet50"
                                  else n for n in sorted(FEATURE_DIM)])
def test_backbone_builds_steps_and_round_trips(name, tmp_path):
    keras.utils.set_random_seed(0)
    backbone = backbones.build_backbone(name)
    for size in (32, 96):
        features = backbone(np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)))
        assert features.shape == (2, FEATURE_DIM[name])
        assert np.all(np.isfinite(features))

    # One PIRL train step (eager: a traced step per backbone would cost minutes).
    cfg = tiny(backbone=name, batch_size=2, num_negatives=4, embedding_dim=8)
    model = training.build_pirl(cfg, num_examples=6, backbone=backbone)
    training.build_variables(model, cfg)
    q = transforms.jigsaw_geometry(32).patch_input
    rng = np.random.default_rng(1)
    batch = {"image": tf.constant(rng.uniform(0, 255, (2, 32, 32, 3)), tf.float32),
             "patches": tf.constant(rng.uniform(0, 255, (2, 9, q, q, 3)), tf.float32),
             "index": tf.constant([0, 3], tf.int64)}
    before = [w.numpy().copy() for w in backbone.trainable_weights[:3]]
    logs = model.train_step(batch)
    assert np.isfinite(float(logs["loss"]))
    assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, backbone.trainable_weights))

    encoder = backbones.build_encoder(backbone, 48)
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(2).uniform(0, 255, (2, 48, 48, 3)).astype(np.float32)
    np.testing.assert_array_equal(encoder(x, training=False), loaded(x, training=False))


def test_mac_counter_matches_a_hand_count():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)          # 8x8x8 outputs
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)  # 8x8x16
    x = keras.layers.Conv2D(4, 1)(x)                                          # 8x8x4
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)
    model = keras.Model(inputs, outputs)
    hand = (8 * 8 * 8 * (3 * 3 * 3)      # conv 3x3, 3 -> 8, stride 2
            + 8 * 8 * 16 * (3 * 3)       # depthwise 3x3, multiplier 2
            + 8 * 8 * 4 * 16             # pointwise 16 -> 4
            + 4 * 10)                    # dense
    assert complexity.count_macs(model, 16) == hand


def test_mnasnet_a1_reproduces_the_published_counts():
    """MnasNet-A1 at 224 px, 1000 classes: 3.9M parameters and 312M multiply-adds (within 3%)."""
    net = backbones.build_backbone("mnasnet_a1", input_shape=(224, 224, 3), include_top=True)
    assert abs(net.count_params() / 3.9e6 - 1) < 0.03
    assert abs(complexity.count_macs(net, 224) / 312e6 - 1) < 0.03


def test_table_command_on_two_small_backbones(tmp_path):
    out = tmp_path / "table"
    proc = subprocess.run(
        [sys.executable, "benchmarks/table1.py", "--image_size=64",
         "--backbones=mobilenetv3small,mnasnet_b1", "--runs=3", "--threads=1",
         f"--output_dir={out}"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| mnasnet_b1 |" in proc.stdout
    with open(out / "table1.csv") as f:
        rows = {r["backbone"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"mobilenetv3small", "mnasnet_b1"}
    for row in rows.values():
        assert int(row["macs_with_head"]) > int(row["macs_encoder"]) > 0
        assert int(row["params_with_head"]) > int(row["params_encoder"]) > 0
        assert float(row["latency_ms_1thread"]) > 0
    assert "| mobilenetv3small |" in (out / "table1.md").read_text()


def test_table_command_rejects_an_unknown_backbone(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/table1.py", "--backbones=vgg16",
                           f"--output_dir={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode != 0
    assert "unknown --backbone='vgg16'" in proc.stderr.strip().splitlines()[-1]
