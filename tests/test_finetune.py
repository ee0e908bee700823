"""Few labels: the class-balanced subset, fine-tuning that moves the encoder (and a linear probe
that does not), a separable toy set learned from 10% of its labels, the report's fields, and
one-line errors for fractions that cannot work."""

import os

import numpy as np
import pytest
from conftest import write_labelled_folder

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.data import labelled
from mobile_pirl_tf.evaluation import baselines, finetune, probes

FAST = {**finetune.FINETUNE_RECIPE, "min_steps": 30}  # the recipe, fewer steps


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """3 colour classes, 60 train and 5 test images each, 32 px."""
    root = write_labelled_folder(str(tmp_path_factory.mktemp("toy")), n_train=60, n_test=5,
                                 size=32)
    return labelled.folder_splits(root)


def test_subset_is_class_balanced_seeded_and_the_same_for_every_encoder(toy):
    train, _ = toy
    subset = finetune.label_subset(train, 0.1, seed=3)
    assert np.bincount(subset.labels).tolist() == [6, 6, 6]
    again = finetune.label_subset(train, 0.1, seed=3)
    assert again.keys == subset.keys and again.name == subset.name
    other = finetune.label_subset(train, 0.1, seed=4)
    assert other.keys != subset.keys
    assert set(subset.keys) <= set(train.keys)
    for key, label in zip(subset.keys, subset.labels):  # labels follow their files
        assert os.path.basename(os.path.dirname(key)) == train.classes[label]
    assert finetune.label_subset(train, 1.0) is train


def test_fractions_that_cannot_work_are_one_line_errors(toy):
    train, _ = toy
    for bad in ("0", "-0.1", "1.5", "ten"):
        with pytest.raises(UsageError, match="--label_fraction") as e:
            finetune.parse_fractions([bad])
        assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match="leaves a class without an example"):
        finetune.label_subset(train, 0.005)


def _weights(model):
    return [w.copy() for w in model.get_weights()]


@pytest.mark.slow
def test_finetune_moves_the_encoder_and_the_linear_probe_does_not(toy, tmp_path):
    train, test = toy
    encoder = baselines.random_encoder("mobilenetv3small", 32)
    path = str(tmp_path / "encoder.keras")
    encoder.save(path)
    trainable = [v.path for v in encoder.trainable_variables]
    before = {v.path: v.numpy().copy() for v in encoder.trainable_variables}
    probes.evaluate_encoder(encoder, path, train, test, "linear", str(tmp_path), bn_images=0)
    assert all(np.array_equal(before[p], v.numpy())
               for p, v in zip(trainable, encoder.trainable_variables))
    finetune.train_classifier(encoder, finetune.label_subset(train, 0.1), 32, 0.1,
                              recipe={**FAST, "min_steps": 3, "epochs": 0})
    moved = [not np.array_equal(before[v.path], v.numpy()) for v in encoder.trainable_variables]
    assert sum(moved) > 0.9 * len(moved)


@pytest.mark.slow
def test_separable_toy_set_from_ten_percent_of_its_labels_and_report_fields(toy):
    train, test = toy
    report = finetune.fine_tune_report(
        lambda: baselines.random_encoder("mobilenetv3small", 32),
        finetune.scratch_builder("mobilenetv3small", 32), train, test, [0.1], recipe=FAST,
        log=lambda _: None)
    (entry,) = report["fractions"]
    for field in ("label_fraction", "n_labelled", "top1", "scratch_top1", "files", "steps"):
        assert field in entry
    assert entry["n_labelled"] == 18 and len(entry["files"]) == 18
    assert entry["top1"] > 0.95, entry
