"""Tests of kpartial.comparison: the variant x fraction x seed grid and the Markdown summary."""

import json
import os
import pathlib
import types

import numpy as np
import pandas as pd
import pytest

from kpartial import comparison, run_inputs
from kpartial.config import Config


@pytest.fixture(scope="module")
def compared(tiny_npz, tmp_path_factory):
    root = tmp_path_factory.mktemp("comparison")
    train_spec, test_spec = tiny_npz
    base = Config.from_flat(
        train_data=train_spec,
        test_data=test_spec,
        epochs=2,
        pseudo_start_epoch=1,
        pseudo_every=1,
        hidden_units=(32,),
        jit_compile="false",
        eval_every=1,
    )
    variants = {"kpartial": {}, "ignore": {"method": "ignore"}}
    workdir_root = str(root / "runs")
    results = comparison.compare(base, variants, [0.2], [1, 2], workdir_root, log=lambda line: None)
    return results, workdir_root


def test_compare_grid(compared):
    results, _ = compared
    assert isinstance(results, pd.DataFrame)
    assert len(results) == 4
    assert list(results.columns) == [
        "variant",
        "method",
        "known_fraction",
        "seed",
        "map",
        "cf1",
        "of1",
        "train_seconds",
    ]
    assert list(results["variant"]) == ["kpartial", "kpartial", "ignore", "ignore"]
    assert list(results["method"]) == ["kpartial", "kpartial", "ignore", "ignore"]
    assert list(results["seed"]) == [1, 2, 1, 2]
    assert list(results["known_fraction"]) == [0.2] * 4
    assert results["map"].between(0.0, 1.0).all()
    assert (results["train_seconds"] > 0).all()


def test_compare_workdirs(compared):
    results, root = compared
    for row in results.itertuples():
        workdir = os.path.join(root, row.variant, f"kf0.2_s{row.seed}")
        with open(os.path.join(workdir, "metrics.json")) as f:
            written = json.load(f)
        assert written["map"] == row.map
        assert written["method"] == row.method
        assert written["seed"] == row.seed and written["known_fraction"] == 0.2
        with open(os.path.join(workdir, "config.json")) as f:
            assert json.load(f)["workdir"] == workdir


def test_variants_see_identical_simulated_labels(compared):
    _, root = compared
    read = lambda variant, seed: pathlib.Path(
        root, variant, f"kf0.2_s{seed}", "class_stats.csv"
    ).read_text()
    assert read("kpartial", 1) == read("ignore", 1)
    assert read("kpartial", 2) == read("ignore", 2)
    assert read("kpartial", 1) != read("kpartial", 2)


def test_summary_of_compare_results(compared):
    results, _ = compared
    lines = comparison.summary_table(results).split("\n")
    assert lines[:2] == ["| variant | known 0.2 |", "|---|---|"]
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| kpartial", "| ignore"]
    kpartial = results[results["variant"] == "kpartial"]["map"].to_numpy()
    assert lines[2] == (f"| kpartial | {100 * kpartial.mean():.2f} ± {100 * kpartial.std():.2f} |")


def _hand_made():
    rows = [
        ("kpartial", 0.1, 1, 0.5),
        ("kpartial", 0.1, 2, 0.6),
        ("kpartial", 0.1, 3, 0.7),
        ("kpartial", 0.5, 1, 0.7),
        ("kpartial", 0.5, 2, 0.8),
        ("ignore", 0.1, 1, 0.3),
        ("ignore", 0.1, 2, 0.3),
        ("ignore", 0.5, 1, 0.4),
        ("ignore", 0.5, 2, 0.7),
    ]
    frame = pd.DataFrame(rows, columns=["variant", "known_fraction", "seed", "map"])
    frame["cf1"] = frame["map"] / 2
    return frame


def test_summary_table_exact():
    # Population std (np.std, ddof=0): kpartial@0.1 = std(50, 60, 70) = 8.16 (sample std: 10.00).
    # Rows keep first-seen variant order (not alphabetical).
    assert comparison.summary_table(_hand_made()) == (
        "| variant | known 0.1 | known 0.5 |\n"
        "|---|---|---|\n"
        "| kpartial | 60.00 ± 8.16 | 75.00 ± 5.00 |\n"
        "| ignore | 30.00 ± 0.00 | 55.00 ± 15.00 |"
    )


def test_summary_table_other_metric():
    assert comparison.summary_table(_hand_made(), metric="cf1") == (
        "| variant | known 0.1 | known 0.5 |\n"
        "|---|---|---|\n"
        "| kpartial | 30.00 ± 4.08 | 37.50 ± 2.50 |\n"
        "| ignore | 15.00 ± 0.00 | 27.50 ± 7.50 |"
    )


def test_summary_table_single_seed():
    frame = pd.DataFrame({"variant": ["a"], "known_fraction": [1.0], "map": [0.12345]})
    assert (
        comparison.summary_table(frame)
        == "| variant | known 1.0 |\n|---|---|\n| a | 12.35 ± 0.00 |"
    )


def test_summary_table_missing_cell():
    frame = _hand_made()
    frame = frame[~((frame["variant"] == "ignore") & (frame["known_fraction"] == 0.1))]
    # Regression: the NaN cell of a variant run at only some fractions used to raise TypeError.
    assert comparison.summary_table(frame) == (
        "| variant | known 0.1 | known 0.5 |\n"
        "|---|---|---|\n"
        "| kpartial | 60.00 ± 8.16 | 75.00 ± 5.00 |\n"
        "| ignore |  | 55.00 ± 15.00 |"
    )


def test_data_fields_are_all_that_load_data_reads(tmp_path):
    class Recorder:
        def __init__(self, config):
            self.config, self.read = config, set()

        def __getattr__(self, name):
            self.read.add(name)
            return getattr(self.config, name)

    path = tmp_path / "d.npz"
    x = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    np.savez(path, x=x, y=np.where(x[:, :2] > 0, 1, -1).astype(np.int8))
    for config in (
        Config.from_flat(train_data=f"npz:{path}", test_fraction=0.3),
        Config.from_flat(train_data=f"npz:{path}", test_data=f"npz:{path}"),
    ):
        recorder = Recorder(config.data)
        run_inputs.load_data(types.SimpleNamespace(data=recorder))  # reads only config.data
        assert recorder.read <= set(run_inputs.DATA_FIELDS)
