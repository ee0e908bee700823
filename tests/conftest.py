"""Test set-up: quiet TensorFlow, two logical CPU devices (for MirroredStrategy tests),
and small generated image folders."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# The longest test files first: pytest-xdist deals whole files to its two workers in collection
# order, so the long ones start at once and the short ones fill the gaps (BUILD.md has the
# durations these weights come from).
LONG_FILES = {"test_readme.py": 0, "test_faults.py": 1, "test_cluster.py": 2,
              "test_export.py": 3, "test_hardening.py": 4, "test_finetune.py": 5}


def pytest_collection_modifyitems(items):
    """The longest files first, so the two xdist workers finish together."""
    items.sort(key=lambda item: LONG_FILES.get(os.path.basename(str(item.fspath)), 99))


_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO, "..", "shared", "data")


def write_image_folder(root, num_images=32, size=(48, 56), seed=0):
    """Random-blob images in two nested sub-folders, plus awkward cases the loader must handle:
    greyscale, RGBA, palette, a tiny image, a corrupt file and a text file."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(num_images):
        folder = os.path.join(root, f"group{i % 2}", "nested" if i % 3 == 0 else "")
        os.makedirs(folder, exist_ok=True)
        h, w = size
        yy, xx = np.mgrid[0:h, 0:w]
        image = np.zeros((h, w, 3), np.float32)
        for _ in range(3):  # a few coloured blobs: structure the views can agree on
            cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(6, 16)
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
        noisy = np.clip(image + rng.normal(0, 8, image.shape), 0, 255)
        image = Image.fromarray(noisy.astype(np.uint8))
        kind = i % 8
        if kind == 1:
            image, ext = image.convert("L"), "png"
        elif kind == 2:
            image, ext = image.convert("RGBA"), "png"
        elif kind == 3:
            image, ext = image.convert("P"), "gif"
        elif kind == 4:
            image, ext = image.resize((10, 12)), "bmp"
        else:
            ext = "jpg"
        path = os.path.join(folder, f"img{i:03d}.{ext}")
        image.save(path)
        paths.append(path)
    with open(os.path.join(root, "group0", "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with open(os.path.join(root, "notes.txt"), "w") as f:
        f.write("not an image")
    return paths


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("images"))
    write_image_folder(root)
    return root


def write_labelled_folder(root, classes=("blue", "red", "green"), n_train=10, n_test=4, size=40):
    """train/<class>/ and test/<class>/ images whose class decides the dominant colour."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, name in enumerate(classes):
            folder = os.path.join(root, split, name)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                image = rng.normal(60, 20, (size, size, 3))
                image[..., c % 3] += 120
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                    os.path.join(folder, f"{i}.png"))
    return root


@pytest.fixture(scope="session")
def labelled_folder(tmp_path_factory):
    return write_labelled_folder(str(tmp_path_factory.mktemp("labelled")))


TINY = dict(backbone="mobilenetv3small", image_size=32, batch_size=8, epochs=1, steps_per_epoch=2,
            num_negatives=16, bn_recalibration_images=16, verbose=0)


def tiny(model_dir=None, data_dir=None, **fields):
    """A `TrainConfig` small enough for a test (`TINY`: MobileNetV3-Small at 32 px, batch 8,
    one epoch of two steps, 16 negatives, 16 images for the batch-norm statistics), with the
    folders and `fields` overriding it."""
    from mobile_pirl_tf.core.config import TrainConfig

    folders = {name: str(value) for name, value in (("model_dir", model_dir),
                                                     ("data_dir", data_dir)) if value}
    return TrainConfig(**{**TINY, **folders, **fields})


@pytest.fixture
def tiny_config():
    """`tiny` for tests that take it as a fixture: tiny_config(**fields)."""
    return tiny


@pytest.fixture
def fake_stl10_download(tmp_path, monkeypatch):
    """TFDS's download of STL-10 replaced by a local folder in the archive's layout (12
    unlabelled, 8 train and 8 test images of 96 x 96): preparing then runs for real. Returns
    the list of downloads made (["downloaded"] once TFDS asked for the archive)."""
    import tensorflow_datasets as tfds

    folder = tmp_path / "stl10_download" / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, count in (("train", 8), ("test", 8), ("unlabeled", 12)):
        images = rng.integers(0, 255, (count, 3, 96, 96), dtype=np.uint8)
        (folder / f"{name}_X.bin").write_bytes(images.tobytes())
        if name != "unlabeled":
            (folder / f"{name}_y.bin").write_bytes(
                (np.arange(count) % 10 + 1).astype(np.uint8).tobytes())
    (folder / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n")
    downloads = []

    def download_and_extract(self, url):
        downloads.append("downloaded")
        return str(folder.parent)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract",
                        download_and_extract)
    return downloads
