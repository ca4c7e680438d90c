"""The validation split: held-out training rows select the epoch and the decision thresholds; the
test set cannot influence training, selection or thresholds."""

import os

import keras
import numpy as np
import pandas as pd
import pytest

from kpartial import data, run_inputs, training
from kpartial.config import Config


@pytest.fixture(scope="module")
def config(tiny_npz):
    train, test = tiny_npz
    return Config.from_flat(
        train_data=train,
        test_data=test,
        known_fraction=0.3,
        epochs=5,
        pseudo_start_epoch=2,
        pseudo_every=1,
        prune_schedule=((3, 0.25),),
        hidden_units=(16,),
        monitor_test=True,  # the test set is evaluated every epoch, and still cannot matter
    )


def _run(config, workdir, test_labels_order=None):
    train, test = run_inputs.load_data(config)
    if test_labels_order is not None:
        test = test.with_labels(test.labels[test_labels_order])
    result = training.run(
        config.replace(workdir=str(workdir)),
        log=lambda line: None,
        datasets=(train, test),
    )
    network = keras.saving.load_model(os.path.join(workdir, "network.keras"))
    thresholds = pd.read_csv(os.path.join(workdir, "thresholds.csv"))
    return result, network.get_weights(), thresholds


def test_permuting_the_test_labels_changes_nothing_that_training_chose(config, tmp_path):
    # Every choice a run can make on its own: the two-run focusing and the measured rates.
    config = config.replace(auto_tune="auto", missing_labels="measured")
    result, weights, thresholds = _run(config, tmp_path / "a")
    order = np.random.default_rng(0).permutation(data.load_spec(config.data.test_data).num_examples)
    permuted, permuted_weights, permuted_thresholds = _run(config, tmp_path / "b", order)
    assert permuted["map"] != result["map"]  # the test labels did change
    for mine, theirs in zip(permuted_weights, weights):
        np.testing.assert_array_equal(mine, theirs)
    assert permuted["selection"] == result["selection"]
    assert permuted["auto_tune"]["chosen"] == result["auto_tune"]["chosen"]
    for name, candidate in result["auto_tune"]["candidates"].items():
        assert permuted["auto_tune"]["candidates"][name]["val_map"] == candidate["val_map"]
    pd.testing.assert_frame_equal(permuted_thresholds, thresholds)
    for mine, theirs in zip(permuted["history"], result["history"]):
        for key in ("loss", "val_map", "val_cf1", "active_classes"):
            assert mine.get(key) == theirs.get(key), key


def test_the_run_ends_with_the_best_validation_epoch(config, tmp_path):
    result, _, thresholds = _run(config, tmp_path)
    val_map = [record["val_map"] for record in result["history"]]
    selected = result["selection"]["selected_epoch"]
    assert selected == 1 + int(np.argmax(val_map))
    assert result["selection"]["validation_examples"] == 60  # 0.1 of the 600 training examples
    assert result["history"][selected - 1]["test_map"] == pytest.approx(result["map"], abs=1e-9)
    chosen = thresholds["source"] == "validation F1"
    assert result["selection"]["thresholds_from_validation"] == int(chosen.sum()) > 0
    assert "cf1@0.5" in result and result["cf1"] != result["cf1@0.5"]


def test_last_epoch_selection_and_no_validation(config, tmp_path):
    last = config.replace(select_epoch="last", validation_fraction=0.0)
    result, _, thresholds = _run(last, tmp_path)
    assert result["selection"]["selected_epoch"] == 5
    assert result["selection"]["validation_examples"] == 0
    assert (thresholds["threshold"] == 0.5).all() and result["cf1"] == result["cf1@0.5"]
    assert "val_map" not in result["history"][-1]


def test_bad_validation_settings_are_one_line(config):
    with pytest.raises(ValueError, match="select_epoch=best needs a validation split"):
        config.replace(validation_fraction=0.0)
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0.0, 0.99\]"):
        config.replace(validation_fraction=1.0)
    tiny = config.replace(validation_fraction=0.0001)
    with pytest.raises(data.DataError, match="leaves an empty part"):
        training.run(tiny, log=lambda line: None)


def test_validated_precision_limits_the_pseudo_positives(config):
    def refreshes(**overrides):
        lines = []
        training.run(config.replace(**overrides), log=lines.append)
        return [line for line in lines if "pseudo labels refreshed" in line]

    def count(line, key):  # the refresh line's "N positives" / "validated classes N"
        if key == "positives":
            return float(line.split(" positives")[0].rsplit(", ", 1)[1])
        return float(line.split(f"{key} ")[1].split(",")[0])

    plain = refreshes(auto_tune="off")
    validated = refreshes(auto_tune="off", pseudo_min_precision=0.95)
    assert len(plain) == len(validated) == 3
    for before, after in zip(plain, validated):
        assert "validated classes" in after and "validated classes" not in before
        assert count(after, "positives") <= count(before, "positives")
        assert count(after, "validated classes") <= 8
    with pytest.raises(ValueError, match="pseudo_min_precision measures precision"):
        config.replace(pseudo_min_precision=0.9, validation_fraction=0.0, select_epoch="last")
