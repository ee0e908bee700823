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
    assert keys == images.list_image_files(image_folder)[0]  # a stable example index
    assert len(set(keys)) == 32
    for key in keys:  # greyscale, RGBA, palette GIF, tiny BMP all decode to RGB
        image = source.decode(tf.constant(key))
        assert image.shape[-1] == 3 and image.dtype == tf.uint8


def test_folder_errors(tmp_path):
    with pytest.raises(UsageError, match="not a directory"):
        sources.folder_source(str(tmp_path / "missing"))
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(UsageError, match="no readable image"):
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
def test_tfds_source_with_mock_data():
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        source = sources.tfds_source("stl10")
        assert source.name == "tfds:stl10:unlabelled" and source.num_examples == 12
        batch = next(iter(pipeline.pretraining_dataset(source, 32, 4, 3)))
        assert batch["image"].shape == (4, 32, 32, 3)
        assert batch["patches"].shape[1] == transforms.NUM_PATCHES


def test_tfds_offline_errors_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="not prepared") as e:
        sources.tfds_source("stl10", data_dir=str(tmp_path))
    assert "\n" not in str(e.value) and "--data_dir" in str(e.value)
    with pytest.raises(UsageError, match="unknown TFDS data set"):
        sources.tfds_source("no_such_dataset_xyz", data_dir=str(tmp_path))


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
    skipped = {}
    files, not_images, corrupt = images.list_image_files(str(root), skipped)
    assert len(files) == 16 and corrupt == 2 and not_images == 1    # broken + truncated
    assert skipped == {"repeated directories": 1, "names not UTF-8": 1}
    source = sources.folder_source(str(root))
    assert source.num_examples == 16 and source.skipped == 4
    # Every epoch keeps its length: no file fails at decode time.
    ds = pipeline.pretraining_dataset(source, 32, 4, 4, seed=0, last_epoch=2)
    assert sum(1 for _ in ds) == 8
