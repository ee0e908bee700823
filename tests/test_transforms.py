"""Pretext transformations: shape / dtype / range, seeds, rotation angle, Sobel against NumPy,
composition order, and one PIRL step with an image-ending and a patch-ending composition."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.data import transforms, views
from mobile_pirl_tf.training import fit as training

SIZE = 32
# blur with p = 1 so that "differs across seeds" is about the op, not the coin.
PARAMS = transforms.TransformParams(blur_p=1.0)
RANDOM = [n for n in transforms.IMAGE_TRANSFORMS if n != "sobel"]


def image(seed=0, size=SIZE):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx / size, yy / size, (xx + yy) / (2 * size)], -1)   # asymmetric ramps
    return tf.constant(np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1), tf.float32)


def seed(a, b=0):
    return tf.constant([a, b], tf.int64)


@pytest.mark.parametrize("name", sorted(transforms.IMAGE_TRANSFORMS))
def test_transform_keeps_shape_dtype_and_range(name):
    out = transforms.apply(name, image(), seed(1), PARAMS)
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == tf.float32
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0


@pytest.mark.parametrize("name", sorted(transforms.IMAGE_TRANSFORMS))
def test_transform_is_deterministic_under_a_seed_and_differs_across_seeds(name):
    x = image()
    a = transforms.apply(name, x, seed(3), PARAMS).numpy()
    np.testing.assert_array_equal(a, transforms.apply(name, x, seed(3), PARAMS).numpy())
    others = [transforms.apply(name, x, seed(s), PARAMS).numpy() for s in range(4, 12)]
    if name == "sobel":  # deterministic by definition
        assert all(np.array_equal(a, o) for o in others)
    else:
        assert any(not np.array_equal(a, o) for o in others)


def test_rotation_rotates_by_the_drawn_angle():
    x = image()
    seen = set()
    for s in range(16):
        k = int(transforms.rotation_quarter_turns(seed(s)))
        seen.add(k)
        np.testing.assert_array_equal(transforms.apply("rotation", x, seed(s)).numpy(),
                                      np.rot90(x.numpy(), k, axes=(0, 1)))
    assert seen == {0, 1, 2, 3}


def numpy_sobel(rgb):
    grey = rgb @ np.array([0.2989, 0.5870, 0.1140])
    p = np.pad(grey, 1, mode="reflect")
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    gx = np.zeros_like(grey)
    gy = np.zeros_like(grey)
    for i in range(grey.shape[0]):
        for j in range(grey.shape[1]):
            window = p[i:i + 3, j:j + 3]
            gx[i, j] = np.sum(window * kx)
            gy[i, j] = np.sum(window * kx.T)
    magnitude = np.clip(np.sqrt(gx ** 2 + gy ** 2) / (4 * np.sqrt(2)), 0, 1)
    return np.repeat(magnitude[:, :, None], 3, -1)


def test_sobel_matches_numpy_on_a_known_image():
    x = np.zeros((12, 12, 3))
    x[:, 6:] = 1.0               # a vertical edge
    x[3:5, 2:4] = 0.5            # and a small grey square
    got = transforms.sobel(tf.constant(x, tf.float32)).numpy()
    np.testing.assert_allclose(got, numpy_sobel(x), atol=2e-3)
    assert got[0, 6, 0] > 0.5 and got[0, 0, 0] == 0.0


def test_composition_applies_in_the_written_order():
    raw = tf.cast(image() * 255, tf.uint8)
    s = seed(5)
    s_first, s_second = tf.unstack(tf.random.experimental.stateless_split(s, 2))
    x = transforms.canvas(raw, SIZE)
    for names, order in ((("rotation", "cutout"), ("rotation", "cutout")),
                         (("cutout", "rotation"), ("cutout", "rotation"))):
        expected = transforms.apply(order[1], transforms.apply(order[0], x, s_first), s_second)
        got = transforms.transformed_view(raw, SIZE, names, s)
        np.testing.assert_allclose(got.numpy(), expected.numpy() * 255, atol=1e-4)
    a = transforms.transformed_view(raw, SIZE, ("rotation", "cutout"), s).numpy()
    b = transforms.transformed_view(raw, SIZE, ("cutout", "rotation"), s).numpy()
    assert not np.array_equal(a, b)


def test_jigsaw_then_rotation_rotates_all_patches_by_one_angle():
    raw = tf.cast(image(size=48) * 255, tf.uint8)
    s = seed(2)
    jig_seed, rot_seed = tf.unstack(tf.random.experimental.stateless_split(s, 2))
    patches, _ = transforms.jigsaw_view(raw, SIZE, jig_seed)
    k = int(transforms.rotation_quarter_turns(rot_seed))
    got = transforms.transformed_view(raw, SIZE, ("jigsaw", "rotation"), s).numpy()
    assert got.shape == (9, *patches.shape[1:])
    np.testing.assert_allclose(got, np.rot90(patches.numpy(), k, axes=(1, 2)), atol=1e-3)


def test_parse_rejects_unknown_repeated_and_too_long():
    assert transforms.parse("jigsaw+rotation") == ("jigsaw", "rotation")
    with pytest.raises(UsageError, match="valid: jigsaw, rotation, crop"):
        transforms.parse("jigsaw+mixup")
    with pytest.raises(UsageError, match="repeats"):
        transforms.parse("crop+crop")
    with pytest.raises(UsageError, match="at most 3"):
        transforms.parse("crop+color+blur+noise")


@pytest.mark.parametrize("spec,key",
                         [("crop+color", "transformed"), ("rotation+jigsaw", "patches")])
def test_one_pirl_step_for_image_and_patch_endings(spec, key):
    cfg = tiny(image_size=SIZE, batch_size=2, num_negatives=4, embedding_dim=8,
               transforms=spec)
    cfg.validate()
    elements = [views.pirl_views(tf.cast(image(i, 40) * 255, tf.uint8), tf.constant(i, tf.int64),
                                seed(i), SIZE, cfg.transform_names(), cfg.transform_params())
                for i in range(2)]
    batch = {k: tf.stack([e[k] for e in elements]) for k in elements[0]}
    assert key in batch and set(batch) == {"image", key, "index"}
    model = training.build_pirl(cfg, num_examples=6)
    training.build_variables(model, cfg)
    head = model.transformed_head.name
    assert head == ("g" if key == "patches" else "f_t")
    logs = model.train_step(batch)
    assert np.isfinite(float(logs["loss"])) and np.isfinite(float(logs["loss_transformed"]))
