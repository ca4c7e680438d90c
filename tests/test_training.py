"""End-to-end tests of `kpartial.training.run`: on the tiny synthetic npz data, and tiny runs
with a skipped row, a saved simulation and TFRecord shards."""

import glob
import json
import os
import re

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from kpartial import (
    annotation_test,
    class_stats,
    data,
    label_pruning,
    losses,
    metrics,
    models,
    pseudo_label_rules,
    pseudo_labels,
    report,
    run_inputs,
    simulate,
    training,
)
from kpartial.config import Config
from kpartial.data.readers import synthetic
from kpartial.partial_model import PartialLabelModel
from tests import dense_reference
from tests.helpers import NUM_CLASSES, NUM_EXAMPLES, NUM_FEATURES, write_tiny_npz


def series(history, key):
    """The values of `key` over the epochs that logged it (metrics.json keeps one record per epoch)."""
    return [record[key] for record in history if key in record]


@pytest.fixture(scope="module")
def base_config(tiny_npz):
    train_spec, test_spec = tiny_npz
    return Config.from_flat(
        train_data=train_spec,
        test_data=test_spec,
        known_fraction=0.1,
        epochs=4,
        pseudo_start_epoch=2,
        pseudo_every=1,
        prune_schedule=((3, 0.25),),
        eval_every=1,
        monitor_test=True,
        hidden_units=(32,),
        jit_compile="false",
        auto_tune="off",  # one run's mechanics; the two-candidate default: test_auto_tune.py
    )


@pytest.fixture(scope="module")
def kpartial_run(base_config, tmp_path_factory):
    """(config, returned metrics, log lines) of one kpartial run with pseudo labels and pruning."""
    workdir = str(tmp_path_factory.mktemp("kpartial_run"))
    config = base_config.replace(workdir=workdir)
    lines = []
    result = training.run(config, log=lines.append)
    return config, result, lines


def _read_scalars(logdir):
    """{tag: [(step, value), ...]} of every scalar in the event files under `logdir`."""
    scalars = {}
    files = sorted(glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True))
    assert files, f"no event files under {logdir}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    scalars.setdefault(value.tag, []).append((event.step, None))
                    continue
                number = (
                    float(tf.make_ndarray(value.tensor))
                    if value.HasField("tensor")
                    else float(value.simple_value)
                )
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


def test_metrics_json(kpartial_run):
    config, result, _ = kpartial_run
    with open(os.path.join(config.workdir, "metrics.json")) as f:
        written = json.load(f)
    for key in ("map", "cf1", "of1", "method", "known_fraction", "seed"):
        assert key in written, key
    assert written["method"] == "kpartial"
    assert written["known_fraction"] == 0.1
    assert written["seed"] == 1
    assert written["epochs"] == 4
    assert written["jit_compile"] is False
    assert written["train_data"] == config.data.train_data
    assert written["test_data"] == config.data.test_data
    assert 0.0 <= written["map"] <= 1.0
    assert 0.0 <= written["cf1"] <= 1.0 and 0.0 <= written["of1"] <= 1.0
    # The test set is fully annotated: every entry counts, every class has both labels.
    assert written["annotated_entries"] == NUM_EXAMPLES * NUM_CLASSES
    assert written["evaluated_classes"] == NUM_CLASSES
    # round(0.25 * 8) = 2 classes pruned after 3 epochs.
    assert written["active_classes"] == 6
    # The returned dict is what was written (JSON round trip of plain numbers).
    assert written == json.loads(json.dumps(result))
    # The run ends with the weights of its best val_map epoch: the test mAP logged at that epoch
    # (monitor_test) is the final model's.
    selected = written["selection"]["selected_epoch"]
    val_map = series(written["history"], "val_map")
    assert selected == 1 + int(np.argmax(val_map))
    test_map = series(written["history"], "test_map")[selected - 1]
    assert test_map == pytest.approx(written["map"], abs=1e-12)


def test_history_schedule(kpartial_run):
    _, result, lines = kpartial_run
    history = result["history"]
    assert [record["epoch"] for record in history] == [1, 2, 3, 4]
    assert len(series(history, "loss")) == 4
    assert len(series(history, "test_map")) == 4  # eval_every=1
    # Refreshes at the start of epochs 2 and 3 (0-based), logged at their ends.
    assert [r["epoch"] for r in history if "pseudo_coverage" in r] == [3, 4]
    assert len(series(history, "pseudo_pos_precision")) == 2
    assert all(0.0 < v <= 1.0 for v in series(history, "pseudo_coverage"))
    assert series(history, "active_classes") == [8.0, 8.0, 8.0, 6.0]
    assert sum("pseudo labels refreshed" in line for line in lines) == 2
    assert any("pruned 2 classes by fit_well; 6/8 remain active" in line for line in lines)


def test_config_json_round_trips(kpartial_run):
    config, _, _ = kpartial_run
    with open(os.path.join(config.workdir, "config.json")) as f:
        loaded = json.load(f)
    assert set(loaded) == {part.flag_name(field) for _, part, field in Config.fields()}
    assert loaded["prune_schedule"] == [[3, 0.25]]
    assert loaded["hidden_units"] == [32]
    assert Config.from_flat(**loaded) == config


def test_class_stats_csv(kpartial_run):
    config, _, _ = kpartial_run
    path = os.path.join(config.workdir, "class_stats.csv")
    assert os.path.isfile(path)
    table = pd.read_csv(path)
    assert list(table.columns) == ["label", "positives", "negatives", "prior", "unknown_prior"]
    train, known = _trained_part(config)  # the validation part's labels are not counted
    expected = class_stats.ClassStatistics.from_labels(known, train.label_names)
    assert tuple(table["label"]) == train.label_names
    np.testing.assert_array_equal(table["positives"].to_numpy(), expected.positives)
    np.testing.assert_array_equal(table["negatives"].to_numpy(), expected.negatives)
    np.testing.assert_allclose(table["prior"].to_numpy(), expected.priors, rtol=1e-12)
    np.testing.assert_allclose(table["unknown_prior"], expected.unknown_priors, rtol=1e-12)
    # And from_csv reads it back to the same statistics.
    reread = class_stats.ClassStatistics.from_csv(path, train.label_names)
    np.testing.assert_allclose(reread.priors, expected.priors, rtol=1e-12)


def _trained_part(config):
    """(the examples a run trained on, their known labels): without the validation part."""
    train = data.load(*data.parse_data_spec(config.data.train_data))
    known = simulate.keep_fraction(train.labels, config.data.known_fraction, config.runtime.seed)
    train, _, known = run_inputs.split_validation(train, known, config)
    return train, known


def test_other_artifacts(kpartial_run):
    config, _, _ = kpartial_run
    for name in ("network.keras", "checkpoint/latest.weights.h5", "thresholds.npy"):
        assert os.path.isfile(os.path.join(config.workdir, name)), name
    with open(os.path.join(config.workdir, "label_names.txt")) as f:
        assert f.read() == "".join(f"class_{c:02d}\n" for c in range(NUM_CLASSES))
    thresholds = np.load(os.path.join(config.workdir, "thresholds.npy"))
    assert thresholds.shape == (NUM_CLASSES,)
    np.testing.assert_array_equal(thresholds, np.full(NUM_CLASSES, 0.5, np.float32))


def test_checkpoint_restores_training_state(kpartial_run):
    config, _, _ = kpartial_run
    train, known = _trained_part(config)
    fresh = models.build_mlp(
        NUM_FEATURES,
        NUM_CLASSES,
        config.model.hidden_units,
        config.model.dropout,
        seed=config.runtime.seed + 1,
    )
    # The default run tests how its labels went missing: its unknown rates are model state too.
    loss = losses.StatisticsWeightedLoss(np.full(NUM_CLASSES, 0.3))
    model = PartialLabelModel(
        fresh, train.num_examples, NUM_CLASSES, loss, measures_unknown_rates=True
    )
    model(np.zeros((1, NUM_FEATURES), np.float32))  # build before loading
    model.load_weights(os.path.join(config.workdir, "checkpoint/latest.weights.h5"))
    assert model.unknown_rates_measured and np.all(model.unknown_rates.numpy() > 0)
    # The checkpoint holds the last epoch's weights (network.keras: the selected epoch's).
    last = keras.Model(fresh.inputs, fresh.outputs)
    assert int(model.epochs_done.numpy()) == config.runtime.epochs
    assert all(np.isfinite(w).all() for w in last.get_weights())
    assert sorted(model.active_classes.numpy().tolist()) == [0.0] * 2 + [1.0] * 6
    # The checkpoint holds the last refresh's t+ (prior mode floors it at 0.5), not the init.
    restored_thresholds = model.pseudo_thresholds.numpy()
    assert np.all((restored_thresholds >= 0.5) & (restored_thresholds <= 1.0))
    assert np.any(restored_thresholds > 0.5)
    negative = model.pseudo_negative_thresholds.numpy()
    assert np.all(negative <= restored_thresholds) and np.any(negative > 0)
    # The restored thresholds drive the train step's rule: labels only where unknown.
    resolved = model.resolve_labels(known, model.predict(train.features, verbose=0)).numpy()
    pseudo = np.where(known == 0, resolved, 0)
    assert np.isin(pseudo, [-1, 0, 1]).all()
    np.testing.assert_array_equal(resolved[known != 0], known[known != 0])
    with open(os.path.join(config.workdir, "metrics.json")) as f:
        logged = series(json.load(f)["history"], "pseudo_coverage")[-1]
    assert 0 < logged <= 1 and (pseudo != 0).any()


def test_tensorboard_scalars(kpartial_run):
    config, result, _ = kpartial_run
    scalars = _read_scalars(os.path.join(config.workdir, "tensorboard"))
    assert "ap_by_frequency" in scalars  # the per-class AP plot, as an image
    assert os.path.isfile(os.path.join(config.workdir, "ap_by_frequency.png"))
    for key in ("p@1", "ndcg@5", "psp@5", "cf1@top3"):
        assert 0.0 <= result[key] <= 1.0
    for tag in (
        "epoch_loss",
        "epoch_test_map",
        "epoch_pseudo_coverage",
        "epoch_pseudo_pos_precision",
        "epoch_active_classes",
    ):
        assert tag in scalars, f"{tag} not in {sorted(scalars)}"
    assert [step for step, _ in scalars["epoch_loss"]] == [0, 1, 2, 3]
    assert [step for step, _ in scalars["epoch_test_map"]] == [0, 1, 2, 3]
    assert [step for step, _ in scalars["epoch_pseudo_coverage"]] == [2, 3]
    assert [value for _, value in scalars["epoch_active_classes"]] == [8.0, 8.0, 8.0, 6.0]
    history = result["history"]
    np.testing.assert_allclose(
        [v for _, v in scalars["epoch_loss"]], series(history, "loss"), rtol=1e-6
    )
    np.testing.assert_allclose(
        [v for _, v in scalars["epoch_test_map"]], series(history, "test_map"), rtol=1e-6
    )
    np.testing.assert_allclose(
        [v for _, v in scalars["epoch_pseudo_pos_precision"]],
        series(history, "pseudo_pos_precision"),
        rtol=1e-6,
    )


def test_same_config_and_seed_is_deterministic(kpartial_run, tmp_path):
    config, result, _ = kpartial_run
    again = training.run(config.replace(workdir=str(tmp_path / "again")), log=lambda line: None)
    assert again["map"] == result["map"]
    assert series(again["history"], "loss") == series(result["history"], "loss")


def test_ignore_uses_no_pseudo_labels_or_pruning(base_config):
    assert not pseudo_labels.switched_on(base_config.replace(method="ignore"))
    lines = []
    result = training.run(base_config.replace(method="ignore"), log=lines.append)
    history = result["history"]
    assert not series(history, "pseudo_coverage")
    assert not series(history, "active_classes")
    assert not any("pseudo labels" in line or "pruned" in line for line in lines)
    assert result["active_classes"] == NUM_CLASSES
    assert result["method"] == "ignore"
    assert 0.0 <= result["map"] <= 1.0


def test_config_validation():
    with pytest.raises(ValueError, match="method"):
        Config.from_flat(method="nope")
    with pytest.raises(ValueError, match="jit_compile"):
        Config.from_flat(jit_compile="yes")
    assert pseudo_labels.switched_on(Config.from_flat(pseudo_start_epoch=-1)) is False
    assert label_pruning.switched_on(Config.from_flat(prune_schedule=((1, 0.5),))) is True
    ignore = Config.from_flat(method="ignore", prune_schedule=((1, 0.5),))
    assert label_pruning.switched_on(ignore) is False


def test_different_classes_are_rejected(tiny_npz, tmp_path):
    train_spec, _ = tiny_npz
    other = synthetic.make_imbalanced_features(num_examples=50, num_classes=5, num_features=16)
    np.savez(tmp_path / "other.npz", x=other.features, y=other.labels)
    config = Config.from_flat(train_data=train_spec, test_data=f"npz:{tmp_path}/other.npz")
    with pytest.raises(data.DataError, match="different classes"):
        run_inputs.load_data(config)


def test_resolve_jit_compile():
    if tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"):
        pytest.skip("'auto' means XLA on accelerators")
    assert training.resolve_jit_compile("auto") is False
    assert training.resolve_jit_compile("true") is True
    assert training.resolve_jit_compile("false") is False


def test_mixed_precision_computes_bfloat16_with_float32_logits_and_pruning(base_config, tmp_path):
    """--mixed_precision=on (auto is on only on bfloat16 GPUs): the hidden layers compute in
    bfloat16, the variables, logits and loss stay float32, pseudo labels and a pruned phase run."""
    if not tf.config.list_physical_devices("GPU"):
        assert training.resolve_mixed_precision("auto") == "float32"
    config = base_config.replace(workdir=str(tmp_path / "run"), mixed_precision="on")
    lines = []
    result = training.run(config, log=lines.append)
    assert result["dtype_policy"] == "mixed_bfloat16" and np.isfinite(result["map"])
    assert any("pruned 2 classes" in line for line in lines)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was
    network = keras.saving.load_model(tmp_path / "run" / "network.keras")
    hidden, head = network.layers[1], network.get_layer("logits")
    assert hidden.compute_dtype == "bfloat16" and hidden.kernel.dtype == "float32"
    x = np.zeros((2, network.input_shape[1]), np.float32)
    assert head.compute_dtype == "float32" and network(x).dtype == "float32"


def test_fully_known_classes_keep_a_usable_threshold(base_config, tmp_path):
    # Regression: classes without unknown entries get t+ = inf from prior_matched_thresholds, which
    # once reached the exported thresholds as clip(inf) = 1.0. Now t+ stays in pseudo_thresholds
    # (floored) and export ships the 0.5 decision threshold the reported F1 uses.
    config = base_config.replace(
        known_fraction=1.0,
        epochs=2,
        pseudo_start_epoch=1,
        prune_schedule=(),
        workdir=str(tmp_path),
    )
    lines = []
    training.run(config, log=lines.append)
    assert any("pseudo labels refreshed" in line for line in lines)  # the callback did run
    thresholds = np.load(os.path.join(config.workdir, "thresholds.npy"))
    table = pd.read_csv(os.path.join(config.workdir, "thresholds.csv"))
    np.testing.assert_array_equal(table["threshold"].to_numpy(np.float32), thresholds)
    assert np.all((thresholds > 0) & (thresholds < 1))  # chosen on validation, or 0.5
    default = table["source"] == "default 0.5"
    assert (table["threshold"][default] == 0.5).all()
    assert (table["validation_positives"][~default] >= report.MIN_THRESHOLD_POSITIVES).all()


def test_class_stats_from_another_dataset_set_the_priors(base_config, tmp_path):
    """--class_stats: the loss and the prior-matched thresholds use the file's priors."""
    path = tmp_path / "other.csv"
    names = [f"class_{c:02d}" for c in range(NUM_CLASSES)]
    priors = np.linspace(0.05, 0.4, NUM_CLASSES)
    pd.DataFrame(
        {"label": names[::-1], "positives": 1, "negatives": 1, "prior": priors[::-1]}
    ).to_csv(path, index=False)
    config = base_config.replace(
        class_stats=str(path),
        epochs=1,
        pseudo_labels="off",
        prune_schedule=(),
        workdir=str(tmp_path / "w"),
    )
    training.run(config, log=lambda line: None)
    used = pd.read_csv(tmp_path / "w" / "class_stats.csv")
    np.testing.assert_allclose(used["prior"], priors)  # reordered to the data's classes
    pd.DataFrame({"label": names[:-1], "positives": 1, "negatives": 1, "prior": 0.5}).to_csv(
        path, index=False
    )
    with pytest.raises(data.DataError, match="other.csv: no statistics for 1 classes"):
        training.run(config, log=lambda line: None, overwrite=True)


def test_fixed_pseudo_thresholds_and_random_pruning_run_end_to_end(base_config):
    lines = []
    config = base_config.replace(
        pseudo_mode="fixed", pseudo_positive_threshold=0.9, prune_criterion="random"
    )
    result = training.run(config, log=lines.append)
    assert result["active_classes"] == 6
    assert any("pruned 2 classes by random" in line for line in lines)
    assert sum("pseudo labels refreshed" in line for line in lines) == 2


@pytest.mark.parametrize("method", [m for m in losses.LOSSES if m != "kpartial"])
def test_every_method_trains(base_config, method):
    result = training.run(base_config.replace(method=method, epochs=1), log=lambda line: None)
    assert result["method"] == method and np.isfinite(result["map"])


def test_ll_cp_table_beyond_the_memory_share_is_refused(base_config, monkeypatch, tmp_path):
    """LL-Cp's dense corrections are refused by memory (one line naming the data), not by count."""
    monkeypatch.setattr(run_inputs, "_physical_memory", lambda: 1000)  # bytes
    config = base_config.replace(method="ll_cp", epochs=1, workdir=str(tmp_path / "w"))
    with pytest.raises(data.DataError, match="exceeds half of this machine's memory"):
        training.run(config, log=lambda line: None)
    assert not (tmp_path / "w").exists()  # refused before anything was written


def test_pseudo_labels_and_pruning_combine_with_any_loss(base_config):
    lines = []
    config = base_config.replace(method="asl", pseudo_labels="on", pruning="on")
    assert pseudo_labels.switched_on(config) and label_pruning.switched_on(config)
    result = training.run(config, log=lines.append)
    assert sum("pseudo labels refreshed" in line for line in lines) == 2
    assert result["active_classes"] == 6
    off = base_config.replace(pseudo_labels="off", pruning="off")
    assert not pseudo_labels.switched_on(off) and not label_pruning.switched_on(off)
    with pytest.raises(ValueError, match="pseudo_labels must be"):
        base_config.replace(pseudo_labels="yes")


def test_final_metrics_are_those_of_the_last_epoch_and_of_the_saved_network(kpartial_run):
    config, result, _ = kpartial_run
    selected = result["selection"]["selected_epoch"]
    assert result["map"] == pytest.approx(result["history"][selected - 1]["test_map"], abs=1e-6)
    # The final metrics are those of the saved (selected) weights.
    network = keras.saving.load_model(os.path.join(config.workdir, "network.keras"))
    test = data.load(*data.parse_data_spec(config.data.test_data))
    probabilities = 1 / (1 + np.exp(-network.predict(test.features, verbose=0)))
    assert metrics.evaluate(test.labels, probabilities)["map"] == pytest.approx(
        result["map"], abs=1e-5
    )
    # The run evaluates a stream of batches, keeping annotated entries only: the dense functions
    # on the whole test set give the same numbers.
    train = data.load(*data.parse_data_spec(config.data.train_data))
    known = simulate.keep_fraction(train.labels, config.data.known_fraction, config.runtime.seed)
    _, _, known = run_inputs.split_validation(train, known, config)
    thresholds = np.load(os.path.join(config.workdir, "thresholds.npy"))
    dense = dense_reference.test_metrics(
        test.labels, probabilities.astype(np.float32), thresholds, (known == 1).sum(0), len(known)
    )
    for key, value in dense.items():
        assert result[key] == pytest.approx(value, abs=1e-5, nan_ok=True), key


# ----------------------------------------------------------------------------
# Tiny runs on a 60-example npz


RUN = {
    "test_fraction": 0.3,
    "epochs": 1,
    "pseudo_labels": "off",
    "batch_size": 16,
    "hidden_units": (8,),
    "steps_per_execution": 1,
    "jit_compile": "false",
    "auto_tune": "off",
}


def write_run_npz(path, empty_row=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5)).astype(np.float32)
    y = np.where(rng.random((60, 4)) < 0.3, 1, -1).astype(np.int8)
    if empty_row is not None:
        y[empty_row] = 0
    np.savez(path, x=x, y=y)
    return path


def check_result(result, test_examples):
    for key in ("map", "cf1", "of1", "evaluated_classes", "p@1", "history", "train_seconds"):
        assert key in result
    assert result["annotated_entries"] == test_examples * 4  # test labels are all known
    assert result["epochs"] == 1 and len(result["history"]) == 1


def test_tiny_run_on_npz_with_a_skipped_row(tmp_path):
    path = write_run_npz(tmp_path / "run.npz", empty_row=5)
    config = Config.from_flat(train_data=f"npz:{path}", on_bad_input="skip", **RUN)
    result = training.run(config, log=lambda *_: None)
    check_result(result, test_examples=18)  # round(0.3 * 59)
    reason = {"row without any known label": 1}
    assert result["skipped_input"] == {"train": reason, "test": {}}  # counted once, with train
    with pytest.raises(data.DataError, match=re.escape(f"npz:{path}: row 5 (0-based example)")):
        training.run(config.replace(on_bad_input="error"), log=lambda *_: None)


def test_tiny_run_with_a_saved_simulation(tmp_path):
    path = write_run_npz(tmp_path / "run.npz")
    full = data.load("npz", str(path))
    train, _ = data.split(full, 0.3, seed=0)
    kept = simulate.per_image_count(train.labels, 1, 1, seed=3)
    sim = tmp_path / "sim.npz"
    simulate.save(
        sim,
        kept,
        scheme="per_image_count",
        seed=3,
        params={"positives": 1, "negatives": 1},
        source=train.source,
        label_names=train.label_names,
    )
    config = Config.from_flat(train_data=f"npz:{path}", simulation=str(sim), **RUN)
    assert np.array_equal(run_inputs.training_labels(config, train), kept)
    result = training.run(config, log=lambda *_: None)
    check_result(result, test_examples=18)
    assert result["skipped_input"] == {"train": {}, "test": {}}
    # A simulation of the whole file does not fit the training split.
    simulate.save(
        sim,
        full.labels,
        scheme="keep_fraction",
        seed=0,
        params={},
        source="x",
        label_names=full.label_names,
    )
    with pytest.raises(ValueError, match=re.escape(f"{sim}: shape (60, 4) differs")):
        training.run(config, log=lambda *_: None)


def test_tiny_run_from_tfrecord_shards_and_make_tfrecords_cli(tmp_path, run_tool):
    path = write_run_npz(tmp_path / "run.npz")
    out = tmp_path / "rec"
    done = run_tool("make_tfrecords.py", f"--data=npz:{path}", "--num_shards=3", f"--out={out}")
    assert done.returncode == 0, done.stderr
    assert f"wrote 60 of 60 examples in 3 shards to {out}" in done.stdout
    back = data.load("tfrecord", str(out))
    full = data.load("npz", str(path))
    np.testing.assert_array_equal(back.labels.to_dense(), full.labels)
    np.testing.assert_array_equal(back.features, full.features)

    # Feature records are read into memory, so a validation part can be held out of them.
    config = Config.from_flat(train_data=f"tfrecord:{out}", **RUN)
    result = training.run(config, log=lambda *_: None)
    check_result(result, test_examples=18)
    assert result["skipped_input"] == {"train": {}, "test": {}}
    assert result["train_data"] == f"tfrecord:{out}"


def _auto_and_on(config):
    """The log of a run with pseudo_labels=auto, which must make no pseudo labels, and the
    refresh lines of the same run with pseudo_labels=on."""
    lines = []
    training.run(config, log=lines.append)
    assert not any("pseudo labels refreshed" in line for line in lines)
    on = []
    training.run(config.replace(pseudo_labels="on"), log=on.append, overwrite=True)
    return lines, [line for line in on if "pseudo labels refreshed" in line]


def _verified_labels_npz(path, num_examples=600, num_classes=12, seed=0):
    """Open Images-like labels: each class verified on its own share of the examples (0.5% to
    80%, as frequencies spread over orders of magnitude), 55% of the verified entries positive,
    every unverified entry truly negative."""
    rng = np.random.default_rng(seed)
    verified = rng.random((num_examples, num_classes)) < np.geomspace(0.005, 0.8, num_classes)
    verified[~verified.any(axis=1), -1] = True  # every example has a verified label
    positive = verified & (rng.random(verified.shape) < 0.55)
    y = np.where(verified, np.where(positive, 1, -1), 0).astype(np.int8)
    x = rng.normal(size=(num_examples, 8)) + positive @ rng.normal(size=(num_classes, 8))
    np.savez(path, x=x.astype(np.float32), y=y)
    return f"npz:{path}"


def test_class_dependent_annotation_is_said_and_gives_the_unknown_entries_their_rate(tmp_path):
    config = Config.from_flat(
        train_data=_verified_labels_npz(tmp_path / "train.npz"),
        test_data=_verified_labels_npz(tmp_path / "test.npz", seed=1),
        epochs=4,
        pseudo_start_epoch=1,
        pseudo_every=1,
        prune_schedule=((3, 0.25),),  # a pruning phase rebuilds the loss for its classes
        hidden_units=(16,),
        workdir=str(tmp_path / "run"),
        auto_tune="off",
        missing_labels="counts",
    )
    lines, refreshes = _auto_and_on(config)
    assert any("class statistics: annotation depends on the class" in line for line in lines)
    assert any("pseudo labels: off, because the annotation depends" in line for line in lines)
    # Asked for explicitly, they refresh, with pseudo negatives only.
    assert len(refreshes) == 3 and all(
        ": coverage " in line and ", 0 positives," in line for line in refreshes
    )
    table = pd.read_csv(tmp_path / "run" / "class_stats.csv")
    np.testing.assert_allclose(
        table["unknown_prior"],
        (table["positives"] + 1) / (540 + 2),  # 600 less 10% validation
    )
    assert (table["unknown_prior"] < table["prior"]).all()


@pytest.mark.parametrize("verified", [True, False])
def test_the_default_run_tests_how_its_labels_went_missing(tmp_path, verified):
    """Verified labels (every positive known) read as missing for a reason on the validation
    split, whatever the counts read; labels kept at random read as at random."""
    if verified:
        data_fields = {  # enough held-out examples (300) for the test to see the difference
            "train_data": _verified_labels_npz(tmp_path / "train.npz", num_examples=3000),
            "test_data": _verified_labels_npz(tmp_path / "test.npz", seed=1),
        }
    else:
        data_fields = {
            "train_data": write_tiny_npz(tmp_path / "train.npz", "train"),
            "test_data": write_tiny_npz(tmp_path / "test.npz", "test"),
            "known_fraction": 0.3,
        }
    config = Config.from_flat(
        **data_fields,
        epochs=6,
        pseudo_start_epoch=4,
        hidden_units=(16,),
        learning_rate=0.01,
        prune_schedule="",
    )
    assert config.data.missing_labels == "tested"
    lines = []
    result = training.run(config, log=lines.append)
    held_out = 300 if verified else 60
    (tested,) = [line for line in lines if f"labels tested on {held_out} held-out" in line]
    assert tested.startswith("epoch 5: ")
    reading = "missing for a reason" if verified else "missing at random in classes"
    assert f": {reading}, u = " in tested
    z = float(re.search(r"z = (-?[0-9.]+)", tested).group(1))
    assert (z > annotation_test.Z_CRITICAL) == verified
    assert np.isfinite(result["map"])
    if verified:  # pseudo labels stay off (the priors are dense here, the test agrees)
        assert not any("pseudo labels refreshed" in line for line in lines)


def _dense_labels_npz(path, num_examples=400, num_classes=6, seed=0):
    """Labels missing at random in a dense label space: about 40% of every class positive."""
    rng = np.random.default_rng(seed)
    positive = rng.random((num_examples, num_classes)) < 0.4
    x = rng.normal(size=(num_examples, 8)) + positive @ rng.normal(size=(num_classes, 8))
    np.savez(path, x=x.astype(np.float32), y=np.where(positive, 1, -1).astype(np.int8))
    return f"npz:{path}"


def test_a_dense_label_space_turns_pseudo_labels_off_unless_asked_for(tmp_path):
    config = Config.from_flat(
        train_data=_dense_labels_npz(tmp_path / "train.npz"),
        test_data=_dense_labels_npz(tmp_path / "test.npz", seed=1),
        known_fraction=0.3,
        epochs=3,
        pseudo_start_epoch=1,
        pseudo_every=1,
        hidden_units=(16,),
        workdir=str(tmp_path / "run"),
        auto_tune="off",
    )
    lines, refreshes = _auto_and_on(config)
    assert any("pseudo labels: off, because the label space is dense" in line for line in lines)
    assert len(refreshes) == 2 and not any(", 0 positives," in line for line in refreshes)


def test_refreshes_and_prunings_reuse_their_compiled_passes(base_config, monkeypatch):
    """Three pseudo-label refreshes, two prunings and every evaluation: each pass traced once."""
    made = []
    for module, name in (
        (pseudo_label_rules, "HistogramPass"),
        (label_pruning, "KnownLabelLossPass"),
    ):
        cls = getattr(module, name)

        class Recorded(cls):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                made.append(self)

        monkeypatch.setattr(module, name, Recorded)
        if name == "HistogramPass":
            monkeypatch.setattr(pseudo_labels, name, Recorded)
    config = base_config.replace(
        epochs=6, pseudo_start_epoch=1, prune_schedule="3:0.25,4:0.5", pseudo_labels="on"
    )
    lines = []
    training.run(config, log=lines.append)
    assert sum("pseudo labels refreshed" in line for line in lines) == 5
    assert sum("pruned" in line for line in lines) == 2
    histograms = [p for p in made if isinstance(p, pseudo_label_rules.HistogramPass)]
    losses_ = [p for p in made if isinstance(p, label_pruning.KnownLabelLossPass)]
    assert len(histograms) == 1 and len(losses_) == 1  # made once per run
    assert histograms[0].count.compiled.experimental_get_tracing_count() == 1
    assert losses_[0].accumulate.compiled.experimental_get_tracing_count() == 1


def test_a_pruned_phase_reads_its_classes_labels_from_the_pipeline(base_config, monkeypatch):
    """Where the pruned phases gather the head, the pipeline yields the active classes' labels
    ([B, K]) from the pruning on; the run equals one whose step gathers them from [B, C]."""
    monkeypatch.setattr(label_pruning, "PRUNED_ENTRIES_TO_GATHER", 0)
    config = base_config.replace(monitor_test=False, prune_schedule="2:0.25,3:0.5")
    widths = []

    class LabelWidth(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                widths.append(self.model._label_columns.class_ids.numpy().size)

    lines = []
    with_columns = training.run(config, log=lines.append, callbacks=[LabelWidth()])
    assert any("the step computes them alone" in line for line in lines)
    assert widths == [8, 8, 6, 4]  # 8 classes; a quarter pruned after epoch 2, half after 3
    monkeypatch.setattr(PartialLabelModel, "training_label_columns", lambda model: None)
    without = training.run(config, log=lambda line: None)
    for key in ("map", "cf1", "of1"):
        assert with_columns[key] == pytest.approx(without[key], abs=1e-6)


def test_a_compiled_call_never_runs_past_the_end_of_an_epoch():
    """With --steps_per_execution above the epoch's steps (or not dividing them), Keras' batch
    callbacks and progress bar counted steps beyond the epoch (16/5); the run takes the largest
    divisor instead, and trains exactly the epoch's steps."""
    assert training.execution_steps(16, 5) == 5
    assert training.execution_steps(16, 20) == 10
    assert training.execution_steps(16, 32) == 16
    assert training.execution_steps(16, 17) == 1
    assert training.execution_steps(1, 14) == 1
    seen = {}

    class LastBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen["last"] = max(seen.get("last", -1), batch)

        def on_train_end(self, logs=None):
            seen["iterations"] = int(self.model.optimizer.iterations)

    config = Config.from_flat(
        train_data="synthetic:train", epochs=2, known_fraction=0.1, batch_size=256, verbose=0
    )  # 3600 training examples: 14 steps an epoch
    training.run(config, log=lambda line: None, callbacks=[LastBatch()])
    assert seen == {"last": 13, "iterations": 28}
