import numpy as np
import pytest
import tensorflow as tf

from mobile_pirl_tf.data import augment, transforms, views


def _seed(a, b=0):
    return tf.constant([a, b], tf.int64)


def test_geometry_matches_paper_at_224_and_scales():
    assert transforms.jigsaw_geometry(224) == (255, 85, 64, 64)
    crop, cell, patch, patch_input = transforms.jigsaw_geometry(96)
    assert (crop, cell, patch) == (109, 36, 27)
    assert patch_input == transforms.MIN_BACKBONE_INPUT  # upscaled for keras.applications
    assert transforms.jigsaw_geometry(448).patch == 128


@pytest.mark.parametrize("image_size", [64, 224])
def test_jigsaw_patches_one_per_cell_and_shuffled(image_size):
    geom = transforms.jigsaw_geometry(image_size)
    # A crop whose 9 cells are constant, with value = 10 * (cell number + 1).
    cell_id = np.zeros((geom.crop, geom.crop), np.float32)
    for k in range(9):
        r, c = divmod(k, 3)
        cell_id[r * geom.cell:(r + 1) * geom.cell, c * geom.cell:(c + 1) * geom.cell] = 10 * (k + 1)
    crop = tf.constant(np.repeat(cell_id[:, :, None], 3, axis=2) / 255.0)
    orders = set()
    for s in range(20):
        patches, perm = transforms.jigsaw_patches(crop, geom, _seed(s))
        patches, perm = patches.numpy() * 255.0, perm.numpy()
        assert patches.shape == (9, geom.patch_input, geom.patch_input, 3)
        assert sorted(perm) == list(range(9))  # one patch from each cell
        for k in range(9):  # patch k is entirely inside cell perm[k]
            np.testing.assert_allclose(patches[k], 10 * (perm[k] + 1), atol=1e-3)
        orders.add(tuple(perm))
    assert len(orders) >= 18  # fresh permutations, essentially never the identity
    assert tuple(range(9)) not in orders


def test_jigsaw_jitter_varies_offsets():
    geom = transforms.jigsaw_geometry(224)
    ramp = np.tile(np.arange(geom.crop, dtype=np.float32)[None, :, None], (geom.crop, 1, 3)) / 255.0
    firsts = set()
    for s in range(10):
        patches, perm = transforms.jigsaw_patches(tf.constant(ramp), geom, _seed(s))
        k = int(np.argmin(perm.numpy()))  # the patch from cell 0
        left = round(float(patches[k, 0, 0, 0]) * 255)
        assert 0 <= left <= geom.cell - geom.patch
        firsts.add(left)
    assert len(firsts) > 1


def _image(seed=0, size=(80, 70)):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8))


def test_views_shapes_range_and_determinism():
    image = _image()
    a = views.image_view(image, 64, _seed(1)).numpy()
    b = views.image_view(image, 64, _seed(1)).numpy()
    c = views.image_view(image, 64, _seed(2)).numpy()
    assert a.shape == (64, 64, 3) and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 255
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    pa, perm_a = transforms.jigsaw_view(image, 64, _seed(1))
    pb, perm_b = transforms.jigsaw_view(image, 64, _seed(1))
    pc, _ = transforms.jigsaw_view(image, 64, _seed(2))
    np.testing.assert_array_equal(pa.numpy(), pb.numpy())
    np.testing.assert_array_equal(perm_a.numpy(), perm_b.numpy())
    assert not np.allclose(pa.numpy(), pc.numpy())
    assert pa.shape == (9, 32, 32, 3) and 0 <= pa.numpy().min() and pa.numpy().max() <= 255


def test_tiny_image_is_upscaled():
    tiny = _image(size=(7, 5))
    assert views.image_view(tiny, 64, _seed(0)).shape == (64, 64, 3)
    assert transforms.jigsaw_view(tiny, 64, _seed(0))[0].shape == (9, 32, 32, 3)


def test_photometric_pieces():
    x = tf.constant(np.linspace(0, 1, 48, dtype=np.float32).reshape(4, 4, 3))
    np.testing.assert_allclose(augment.solarize(x).numpy(), np.where(x < 0.5, x, 1 - x))
    auto = augment.autocontrast(x * 0.5 + 0.2).numpy()
    np.testing.assert_allclose(auto.min(axis=(0, 1)), 0, atol=1e-6)
    np.testing.assert_allclose(auto.max(axis=(0, 1)), 1, atol=1e-6)
    assert len(np.unique(np.round(augment.posterize(x, 2).numpy() * 255))) <= 4
    np.testing.assert_allclose(augment.sharpness(x, 1.0).numpy(), x.numpy(), atol=1e-6)


def test_image_view_min_scale_reaches_the_crop(monkeypatch):
    """--view_min_scale goes from the training params to the image view's crop; 0 is refused."""
    from mobile_pirl_tf.core.errors import UsageError
    seen = []
    real = augment.random_resized_crop
    monkeypatch.setattr(augment, "random_resized_crop",
                        lambda image, size, scale, seed, **kw: seen.append(scale) or
                        real(image, size, scale, seed, **kw))
    image = tf.zeros([80, 80, 3], tf.uint8)
    views.pirl_views(image, 0, _seed(0), 64, ("rotation",),
                    transforms.TransformParams(view_min_scale=0.5))
    assert seen == [(0.5, 1.0)]
    with pytest.raises(UsageError, match="view_min_scale"):
        transforms.TransformParams(view_min_scale=0.0).validate()


@pytest.mark.parametrize("bits,factor,threshold", [(8, 1.0, 256), (4, 0.1, 128), (5, 1.9, 0),
                                                   (6, 0.73, 200), (7, 1.31, 17)])
def test_vissl_photometric_matches_pil(bits, factor, threshold):
    """VISSL's chain (posterize, sharpness, solarize, autocontrast with PIL's ImageOps /
    ImageEnhance) on a fixed 8-bit image, reproduced exactly by the TF op."""
    from PIL import Image, ImageEnhance, ImageOps

    rng = np.random.default_rng(0)
    u8 = np.clip(rng.normal(120, 50, (20, 24, 3)) + np.linspace(0, 60, 24)[None, :, None],
                 0, 255).astype(np.uint8)
    pil = Image.fromarray(u8)
    pil = ImageOps.posterize(pil, bits)
    pil = ImageEnhance.Sharpness(pil).enhance(factor)
    pil = ImageOps.solarize(pil, threshold)
    expected = np.asarray(ImageOps.autocontrast(pil), np.float32)
    got = augment.vissl_photometric(tf.constant(u8 / 255.0, tf.float32), bits, factor, threshold)
    np.testing.assert_array_equal(np.round(got.numpy() * 255.0), expected)


def test_vissl_photometric_draws_like_vissl_and_applies_with_p():
    """Parameters drawn in VISSL's ranges (posterize 4-8 bits, sharpness 0.1-1.9, solarize 0-256,
    closed integer intervals), the step applied to about 66 % of images, all four at once."""
    draws = [augment.vissl_photometric_parameters(_seed(s)) for s in range(300)]
    bits = {int(b) for b, _, _ in draws}
    factors = [float(f) for _, f, _ in draws]
    thresholds = [int(t) for _, _, t in draws]
    assert bits == {4, 5, 6, 7, 8}
    assert 0.1 <= min(factors) < 0.2 and 1.8 < max(factors) < 1.9
    assert 0 <= min(thresholds) < 10 and 246 < max(thresholds) <= 256
    image = tf.constant(np.random.default_rng(1).uniform(0.2, 0.6, (16, 16, 3)), tf.float32)
    changed = [not np.allclose(augment.random_photometric(image, _seed(s), kind="vissl").numpy(),
                               image.numpy()) for s in range(200)]
    assert 0.55 < np.mean(changed) < 0.77
    one_of = augment.random_photometric(image, _seed(3), kind="one_of")
    assert one_of.shape == image.shape
    with pytest.raises(ValueError, match="photometric kind"):
        augment.random_photometric(image, _seed(3), kind="all")
