import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.data import images, pipeline, sources, transforms


def test_folder_source_skips_and_counts_bad_files(image_folder):
    source = sources.folder_source(image_folder)
    assert source.num_examples == 32
    assert source.skipped == 2  # broken.jpg and notes.txt
    keys = [k.decode() for k in source.keys.as_numpy_iterator()]
    assert keys == images.list_image_files(image_folder).files  # a stable example index
    assert len(set(keys)) == 32
    for key in keys:  # greyscale, RGBA, palette GIF, tiny BMP all decode to RGB
        image = source.decode(tf.constant(key))
        assert image.shape[-1] == 3 and image.dtype == tf.uint8


def test_folder_errors(tmp_path):
    with pytest.raises(UsageError, match="not a directory"):
        sources.folder_source(str(tmp_path / "missing"))
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(UsageError, match="no image TensorFlow can read"):
        sources.folder_source(str(tmp_path))


def test_pipeline_batches_indices_and_reproducibility(image_folder):
    source = sources.folder_source(image_folder)
    def first_epoch(seed):
        ds = pipeline.pretraining_dataset(source, 32, 8, steps_per_epoch=4, seed=seed,
                                          first_epoch=0, last_epoch=1)
        return list(ds.as_numpy_iterator())
    a, b, c = first_epoch(0), first_epoch(0), first_epoch(1)
    assert len(a) == 4
    assert a[0]["image"].shape == (8, 32, 32, 3)
    assert a[0]["patches"].shape == (8, 9, 32, 32, 3)
    indices = np.concatenate([batch["index"] for batch in a])
    assert sorted(indices) == list(range(32))  # every example exactly once per epoch
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["index"], y["index"])
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["patches"], y["patches"])
    assert not np.array_equal(indices, np.concatenate([batch["index"] for batch in c]))


def test_resumed_epochs_match_an_uninterrupted_stream(image_folder):
    source = sources.folder_source(image_folder)
    whole = list(pipeline.pretraining_dataset(source, 32, 16, 2, seed=3, first_epoch=0,
                                          last_epoch=2).as_numpy_iterator())
    resumed = list(pipeline.pretraining_dataset(source, 32, 16, 2, seed=3, first_epoch=1,
                                            last_epoch=2).as_numpy_iterator())
    assert len(whole) == 4 and len(resumed) == 2
    for x, y in zip(whole[2:], resumed):
        np.testing.assert_array_equal(x["index"], y["index"])
        np.testing.assert_array_equal(x["image"], y["image"])


@pytest.mark.slow
def test_tfds_source_with_mock_data(monkeypatch):
    monkeypatch.setattr(sources, "network_reachable", lambda: True)  # mock_data's no-op download
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        source = sources.tfds_source("stl10")
        assert source.name == "tfds:stl10:unlabelled" and source.num_examples == 12
        batch = next(iter(pipeline.pretraining_dataset(source, 32, 4, 3)))
        assert batch["image"].shape == (4, 32, 32, 3)
        assert batch["patches"].shape[1] == transforms.NUM_PATCHES


def test_tfds_refusals_are_one_line(tmp_path, monkeypatch):
    def offline(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'ai.stanford.edu'")
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    monkeypatch.setattr(sources, "network_reachable", lambda: True)  # a download that fails
    with pytest.raises(UsageError, match="could not download and prepare TFDS 'stl10'") as e:
        sources.tfds_source("stl10", data_dir=str(tmp_path))
    assert "\n" not in str(e.value) and "no network here? pass --data_dir" in str(e.value)
    with pytest.raises(UsageError, match="unknown TFDS data set"):
        sources.tfds_source("no_such_dataset_xyz", data_dir=str(tmp_path))
    with pytest.raises(UsageError, match="needs a manual download.*--tfds_manual_dir") as e:
        sources.tfds_source("imagenet2012", data_dir=str(tmp_path))
    assert "ILSVRC2012_img_train.tar" in str(e.value) and "\n" not in str(e.value)


def test_what_preparing_stl10_and_imagenet2012_needs_is_installed():
    """`download_and_prepare` reads each builder's code path, which needs importlib_resources
    (not a TFDS dependency); imagenet2012's builder needs its common module."""
    import importlib_resources  # noqa: F401
    from tensorflow_datasets.datasets.imagenet2012 import imagenet_common  # noqa: F401

    for name in ("stl10", "imagenet2012"):
        assert os.path.exists(tfds.builder(name).code_path)


def test_a_missing_stl10_is_downloaded_and_prepared_with_its_size_printed_first(
        tmp_path, fake_stl10_download, monkeypatch):
    monkeypatch.setattr(sources, "network_reachable", lambda: True)
    builder = tfds.builder("stl10", data_dir=str(tmp_path / "tfds"))
    logs = []
    sources.prepare("stl10", builder, log=logs.append)
    assert fake_stl10_download == ["downloaded"] and builder.is_prepared()
    assert len(logs) == 1 and "2.46 GiB" in logs[0] and "preparing it into" in logs[0]
    source = sources.tfds_source("stl10", data_dir=str(tmp_path / "tfds"))
    assert source.num_examples == 12 and fake_stl10_download == ["downloaded"]  # once


def test_each_element_carries_the_index_of_its_own_file(image_folder):
    """The memory-bank row of an element is the index of the file its views were cut from."""
    source = sources.folder_source(image_folder)
    for epoch in (0, 3):
        elements = list(pipeline._epoch_orders(source, 32, seed=5)(tf.constant(epoch, tf.int64))
                        .as_numpy_iterator())
        assert sorted(int(i) for _, i, _ in elements) == list(range(32))
        for key, index, _ in elements:
            assert key.decode() == source.paths[index]


def test_images_kept_in_memory_give_the_same_batches(image_folder):
    source = sources.folder_source(image_folder)
    cache = pipeline.image_cache(source)
    assert cache is not None and cache.nbytes == images.decoded_bytes(source.paths)
    decoded = list(pipeline.pretraining_dataset(source, 32, 8, 2, seed=5, first_epoch=0,
                                                last_epoch=1).as_numpy_iterator())
    kept = list(pipeline.pretraining_dataset(source, 32, 8, 2, seed=5, first_epoch=0,
                                             last_epoch=1, cache=cache).as_numpy_iterator())
    for a, b in zip(decoded, kept):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    assert pipeline.image_cache(source, limit_bytes=cache.nbytes - 1) is None




def test_link_loops_truncated_jpegs_and_non_utf8_names_are_skipped_and_counted(tmp_path):
    import shutil

    from conftest import write_image_folder

    root = tmp_path / "images"
    write_image_folder(str(root), num_images=16)
    os.symlink(str(root), str(root / "group0" / "loop"))            # a directory link loop
    jpeg = next(p for p in sorted(root.rglob("*.jpg")) if p.name != "broken.jpg")
    data_bytes = jpeg.read_bytes()
    (root / "truncated.jpg").write_bytes(data_bytes[:len(data_bytes) // 2])
    shutil.copy(jpeg, os.fsencode(str(root)) + b"/caf\xe9.jpg")     # Latin-1, not UTF-8
    scan = images.list_image_files(str(root))
    reasons = sorted(reason for _, reason in scan.skipped)
    assert len(scan.files) == 16 and scan.repeated_dirs == 1
    assert reasons == ["corrupt, truncated or not an image", "name not UTF-8",
                       "not an image (extension)", "truncated JPEG"]
    assert "truncated.jpg: truncated JPEG" in scan.summary(shown=5)
    source = sources.folder_source(str(root))
    assert source.num_examples == 16 and source.skipped == 4
    # Every epoch keeps its length: no file fails at decode time.
    ds = pipeline.pretraining_dataset(source, 32, 4, 4, seed=0, last_epoch=2)
    assert sum(1 for _ in ds) == 8


def write_format_battery(folder):
    """Files of many formats and modes, each under an image extension (.jpg, .png or .bmp for
    the formats that have none of ours): {file name: (format, mode)}."""
    from PIL import Image

    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
    out = {}
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("BMP", "bmp"),
                     ("WEBP", "webp"), ("TIFF", "jpg"), ("ICO", "png"), ("PPM", "jpg"),
                     ("TGA", "bmp")):
        for mode in ("1", "L", "P", "RGB", "RGBA", "CMYK", "I"):
            name = f"{fmt}_{mode}.{ext}"
            try:
                base.convert(mode).save(os.path.join(folder, name), fmt)
                out[name] = (fmt, mode)
            except (OSError, ValueError, KeyError):
                if os.path.exists(os.path.join(folder, name)):
                    os.remove(os.path.join(folder, name))  # Pillow cannot write that mode there
    for fmt, ext in (("GIF", "gif"), ("WEBP", "webp"), ("PNG", "png")):
        name = f"{fmt}_animated.{ext}"
        base.save(os.path.join(folder, name), fmt, save_all=True,
                  append_images=[base.rotate(90)])
        out[name] = (fmt, "animated")
    return out


def test_the_scan_accepts_exactly_what_the_training_decoder_reads(tmp_path):
    battery = write_format_battery(str(tmp_path))
    accepted = {os.path.basename(p) for p in images.list_image_files(str(tmp_path)).files}
    decodes = set()
    for name in battery:
        try:
            images.read_and_decode(os.path.join(str(tmp_path), name)).numpy()
            decodes.add(name)
        except tf.errors.OpError:
            pass
    assert accepted == decodes
    assert {"BMP_1.bmp", "WEBP_animated.webp", "TIFF_RGB.jpg"}.isdisjoint(accepted)
    assert {"JPEG_CMYK.jpg", "PNG_animated.png", "GIF_animated.gif"} <= accepted


def test_a_fifo_named_like_an_image_is_skipped_without_blocking(tmp_path):
    import signal

    from conftest import write_image_folder

    write_image_folder(str(tmp_path), num_images=4)
    os.mkfifo(str(tmp_path / "pipe.jpg"))
    signal.alarm(60)  # a blocking open would hang the test forever
    try:
        scan = images.list_image_files(str(tmp_path))
    finally:
        signal.alarm(0)
    assert (str(tmp_path / "pipe.jpg"), "not a regular file") in scan.skipped


def test_labelled_folders_get_the_same_scan_empty_classes_are_not_classes_and_val_is_test(
        tmp_path):
    from conftest import write_labelled_folder
    from PIL import Image

    from mobile_pirl_tf.data import labelled

    root = write_labelled_folder(str(tmp_path / "lab"))
    os.makedirs(os.path.join(root, "train", "empty"))
    Image.new("RGB", (8, 8)).convert("1").save(os.path.join(root, "train", "red", "mono1.bmp"))
    train, test = labelled.folder_splits(root)
    assert train.classes == ["blue", "green", "red"]  # "empty" is not a class
    assert len(train.labels) == 30 and not any(k.endswith("mono1.bmp") for k in train.keys)
    os.rename(os.path.join(root, "test"), os.path.join(root, "val"))  # Imagenette's archive
    assert len(labelled.folder_splits(root)[1].labels) == len(test.labels)
