"""auto_tune: kpartial's two focusing candidates, chosen on the validation split, resumable."""

import json
import os

import keras
import numpy as np
import pytest

from kpartial import auto_tune, class_stats, data, distribution, training
from kpartial.config import Config
from kpartial.workdir import WorkdirError


@pytest.fixture(scope="module")
def config(tiny_npz):
    train, test = tiny_npz
    return Config.from_flat(
        train_data=train,
        test_data=test,
        known_fraction=0.3,
        epochs=4,
        pseudo_start_epoch=2,
        pseudo_every=1,
        hidden_units=(16,),
        auto_tune="auto",  # the two-run search is asked for: the default trains once
    )


def _history(selected_epoch, *val_maps):
    return {
        "history": [{"epoch": e + 1, "val_map": v} for e, v in enumerate(val_maps)],
        "selection": {"selected_epoch": selected_epoch},
    }


def test_the_choice_is_the_higher_validation_map_and_a_tie_keeps_the_default():
    assert auto_tune.choose({"focused": 0.5, "unfocused": 0.5}) == "focused"
    assert auto_tune.choose({"focused": 0.5, "unfocused": 0.51}) == "unfocused"
    assert auto_tune.choose({"focused": 0.5, "unfocused": float("nan")}) == "focused"
    assert auto_tune.validation_score(_history(2, 0.3, 0.6, 0.4)) == 0.6
    assert auto_tune.validation_score(_history(3, 0.9, 0.6, 0.4)) == 0.4  # selected "last"


def test_candidates_add_their_options_to_the_users(config):
    mine = config.replace(loss_options="balance=0.25", workdir="/w")
    unfocused = auto_tune.candidate_config(mine, "unfocused")
    assert unfocused.loss.options == "balance=0.25,negative_focusing=0"
    assert unfocused.workdir == os.path.join("/w", "auto_tune", "unfocused")
    assert unfocused.loss.auto_tune == "off"
    assert auto_tune.candidate_config(mine, "focused").loss.options == "balance=0.25"


def _run(config, path, **kwargs):
    lines = []
    result = training.run(config.replace(workdir=str(path)), log=lines.append, **kwargs)
    return result, lines


def test_the_run_keeps_the_candidate_with_the_better_validation_map(config, tmp_path):
    result, lines = _run(config, tmp_path)
    tuned = result["auto_tune"]
    scores = {}
    for name in auto_tune.CANDIDATES:
        with open(tmp_path / "auto_tune" / name / "metrics.json") as f:
            own = json.load(f)
        scores[name] = auto_tune.validation_score(own)
        assert tuned["candidates"][name]["val_map"] == scores[name]
    assert tuned["chosen"] == auto_tune.choose(scores)
    assert any(line.startswith(f"auto_tune: chose {tuned['chosen']}") for line in lines)
    assert lines[0].startswith("auto_tune: 2 runs") and "--auto_tune=off trains once" in lines[0]
    # The last line is the chosen run's result, not a candidate's line 90 lines up.
    assert lines[-1] == (
        f"kpartial (auto_tune: {tuned['chosen']}): mAP={result['map']:.4f} "
        f"CF1={result['cf1']:.4f} OF1={result['of1']:.4f} on the test set; artifacts in {tmp_path}"
    )
    chosen = tmp_path / "auto_tune" / tuned["chosen"]
    for name in auto_tune.CHOSEN_ARTIFACTS:
        assert (tmp_path / name).read_bytes() == (chosen / name).read_bytes(), name
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f)["auto_tune"]["chosen"] == tuned["chosen"]
    with open(chosen / "metrics.json") as f:
        assert json.load(f)["map"] == result["map"]
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["auto_tune"] == "auto"
    network = keras.saving.load_model(tmp_path / "network.keras")
    assert network.output_shape[-1] == 8


class _StopAfter(keras.callbacks.Callback):
    """Kills the run (an exception out of fit) after `epochs` epochs over all candidates."""

    def __init__(self, epochs):
        super().__init__()
        self.left = epochs

    def on_epoch_end(self, epoch, logs=None):
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt("killed")


def test_a_killed_tune_resumes_to_the_same_result(config, tmp_path):
    straight, _ = _run(config, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        _run(config, tmp_path / "killed", callbacks=[_StopAfter(config.runtime.epochs + 2)])
    assert (tmp_path / "killed" / "auto_tune" / "focused" / "metrics.json").is_file()
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed, _ = _run(config, tmp_path / "killed", resume=True)
    assert resumed["map"] == straight["map"]
    for name in auto_tune.CANDIDATES:
        mine, theirs = (r["auto_tune"]["candidates"][name] for r in (resumed, straight))
        assert mine["val_map"] == theirs["val_map"], name
    again, lines = _run(config, tmp_path / "killed", resume=True)
    assert again["map"] == straight["map"] and any("finished run" in line for line in lines)


def test_complete_labels_train_once_with_gamma_4(config, tmp_path):
    complete = config.replace(known_fraction=1.0)
    result, lines = _run(complete, tmp_path / "auto")
    assert "auto_tune" not in result and not (tmp_path / "auto" / "auto_tune").exists()
    assert any("every training entry is annotated" in line for line in lines)
    with open(tmp_path / "auto" / "config.json") as f:
        assert json.load(f)["auto_tune"] == "off"  # what it ran with
    explicit = complete.replace(auto_tune="off", loss_options="negative_focusing=4")
    assert _run(explicit, tmp_path / "gamma4")[0]["map"] == result["map"]
    assert (
        _run(explicit.replace(loss_options=""), tmp_path / "g")[0]["map"] == (result["map"])
    )  # off and complete: gamma 4 too (the loss's statistics rule, not the tune)


def test_bad_input_leaves_nothing_that_blocks_the_next_attempt(config, tmp_path):
    (tmp_path / "other.csv").write_text("label,positives,negatives,prior\nnot_a_class,1,1,0.5\n")
    bad = config.replace(class_stats=str(tmp_path / "other.csv"))
    for _ in range(2):  # the second attempt fails the same way, not on a half-claimed workdir
        with pytest.raises(data.DataError, match="other.csv"):
            _run(bad, tmp_path / "run")
        assert not (tmp_path / "run").exists()


def test_a_run_from_before_auto_tune_resumes_only_as_it_ran(config, tmp_path):
    once = config.replace(auto_tune="off", epochs=3)
    _run(once, tmp_path)
    path = tmp_path / "config.json"
    started = json.loads(path.read_text())
    del started["auto_tune"]  # as written before the field existed
    path.write_text(json.dumps(started))
    with pytest.raises(WorkdirError, match="auto_tune='off' -> 'auto'"):
        _run(once.replace(auto_tune="auto"), tmp_path, resume=True)
    _, lines = _run(once, tmp_path, resume=True)
    assert any("finished run" in line for line in lines)


def test_where_it_cannot_tune_on_is_refused_in_one_line(config):
    with pytest.raises(ValueError, match="method=ignore has none to tune"):
        config.replace(auto_tune="on", method="ignore")
    with pytest.raises(ValueError, match="chooses on the validation split"):
        config.replace(auto_tune="on", validation_fraction=0.0, select_epoch="last")
    with pytest.raises(ValueError, match="leave it out of loss_options"):
        config.replace(auto_tune="on", loss_options="negative_focusing=1")
    with pytest.raises(ValueError, match="auto_tune must be one of auto, on, off"):
        config.replace(auto_tune="yes")
    partial = class_stats.ClassStatistics.from_labels(np.array([[1, 0], [-1, -1]]), ["a", "b"])
    strategy = distribution.placement("auto")
    assert auto_tune.off_because(config, partial, strategy) == ""
    assert "no validation split to choose on" in auto_tune.off_because(
        config.replace(validation_fraction=0.0, select_epoch="last"),
        partial,
        strategy,
    )
    given = config.replace(loss_options="negative_focusing=1")
    assert "gives negative_focusing, which stands" in auto_tune.off_because(
        given, partial, strategy
    )
    two_workers = strategy._replace(place=strategy.place._replace(count=2))
    assert "multi-worker" in auto_tune.off_because(config, partial, two_workers)
    with pytest.raises(ValueError, match="give auto_tune=off"):
        auto_tune.off_because(config.replace(auto_tune="on"), partial, two_workers)


def test_another_method_records_its_auto_tune_as_given_and_resumes(config, tmp_path):
    """auto_tune concerns kpartial's loss: an `ignore` run's config.json keeps `auto`, as runs
    before the config was nested wrote it, so such a workdir resumes."""
    ignore = config.replace(method="ignore", epochs=2)
    result, lines = _run(ignore, tmp_path)
    assert not any(line.startswith("auto_tune") for line in lines)
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["auto_tune"] == "auto"
    again, lines = _run(ignore, tmp_path, resume=True)
    assert again["map"] == result["map"] and any("holds a finished run" in l for l in lines)
