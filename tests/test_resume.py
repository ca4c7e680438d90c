"""A killed run resumes to the same result: SIGKILL at three points, `--resume`, compare.

Every run goes through `tools/train.py`. The killed runs start it through a small wrapper that
adds one Keras callback (or wraps the checkpoint write) which SIGKILLs the process at the chosen
point; nothing in kpartial knows about the test.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT, SHARED_DATA

EMOTIONS = SHARED_DATA / "mulan" / "emotions"

# Kills the run at KILL_POINT, then runs tools/train.py with the remaining arguments.
KILLER = r"""
import os, runpy, signal, sys
kill_point, sys.argv = sys.argv[1], [sys.argv[2], *sys.argv[3:]]
import keras
from kpartial import checkpoints, training

def die():
    os.kill(os.getpid(), signal.SIGKILL)

class Kill(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if kill_point == "mid_epoch" and self.epoch == 3 and batch >= 3:
            die()
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        # Runs after the pseudo-label callback's on_epoch_begin: the refresh of epoch 2 is done.
        if kill_point == "after_refresh" and epoch == 2:
            die()

if kill_point == "checkpoint_write":
    save = keras.Model.save_weights
    def save_then_die(self, filepath, *args, **kwargs):
        save(self, filepath, *args, **kwargs)
        if not hasattr(self, "epochs_done"):  # the best epoch's network, not the checkpoint
            return
        if int(self.epochs_done.numpy()) == 3:  # the write after epoch 3 is cut short
            with open(filepath, "r+b") as f:
                f.truncate(os.path.getsize(filepath) // 2)
            die()
    keras.Model.save_weights = save_then_die

run = training.run
training.run = lambda *args, **kwargs: run(
    *args, **{**kwargs, "callbacks": [*kwargs.get("callbacks", ()), Kill()]}
)
sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as when the tool is run as a script
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _data_flags(tmp_path):
    if EMOTIONS.is_dir():
        return [
            f"--train_data=mulan:{EMOTIONS / 'emotions-train.arff'}",
            f"--test_data=mulan:{EMOTIONS / 'emotions-test.arff'}",
            "--batch_size=32",
        ]
    return ["--train_data=synthetic:train", "--batch_size=256"]  # without ../shared


def _train(args, kill_point=None, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    tool = str(ROOT / "tools" / "train.py")
    command = [sys.executable, tool, *args]
    if kill_point:
        command = [sys.executable, "-c", KILLER, kill_point, tool, *args]
    return subprocess.run(
        command, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def _predictions(workdir):
    """The exported model's probabilities on fixed random inputs of its width."""
    from kpartial import export

    path = workdir.parent / f"{workdir.name}_export"
    if not path.exists():
        export.export_workdir(str(workdir), str(path))
    serve, _, _ = export.load_serving(str(path))
    (width,) = export.read_marker(str(path))["input_shape"]
    x = np.random.default_rng(0).uniform(0, 1, (8, width)).astype(np.float32)
    return serve(x=x)["probabilities"].numpy()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """workdir of the uninterrupted run, and {kill point: (killed proc, resumed proc, workdir)}."""
    root = tmp_path_factory.mktemp("resume")
    args = [
        *_data_flags(root),
        "--method=kpartial",
        "--known_fraction=0.5",
        "--seed=3",
        "--epochs=6",
        "--hidden_units=32",
        "--dropout=0.2",  # random masks too must not depend on resuming
        "--pseudo_start_epoch=2",
        "--pseudo_every=2",
        "--prune_schedule=3:0.3",
        "--steps_per_execution=4",
        "--verbose=0",
        "--auto_tune=off",  # one run's kill points; a killed tune: test_auto_tune.py
    ]
    whole = root / "whole"
    proc = _train([*args, f"--workdir={whole}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = {}
    for point in ("mid_epoch", "after_refresh", "checkpoint_write"):
        workdir = root / point
        killed = _train([*args, f"--workdir={workdir}"], kill_point=point)
        again = _train([*args, f"--workdir={workdir}", "--resume"])
        resumed[point] = (killed, again, workdir)
    return whole, resumed


@pytest.mark.parametrize("point", ["mid_epoch", "after_refresh", "checkpoint_write"])
def test_a_killed_run_resumes_to_the_same_result(runs, point):
    whole, resumed = runs
    killed, again, workdir = resumed[point]
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert again.returncode == 0, again.stderr[-3000:]
    expected_epoch = {"mid_epoch": 3, "after_refresh": 2, "checkpoint_write": 2}[point]
    assert f"continuing {workdir} after epoch {expected_epoch}" in again.stdout
    reference = json.loads((whole / "metrics.json").read_text())
    result = json.loads((workdir / "metrics.json").read_text())
    assert result["map"] == pytest.approx(reference["map"], abs=1e-6)
    assert result["resumed_after_epoch"] == expected_epoch
    assert [r["epoch"] for r in result["history"]] == list(range(1, 7))
    for mine, theirs in zip(result["history"], reference["history"]):
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-6), mine["epoch"]
    np.testing.assert_allclose(_predictions(workdir), _predictions(whole), atol=1e-6)
    # TensorBoard continued in the same logdir.
    assert len(list((workdir / "tensorboard" / "train").glob("events.out.tfevents.*"))) == 2


def test_a_kill_during_the_checkpoint_write_leaves_the_previous_checkpoint(runs):
    _, resumed = runs
    _, _, workdir = resumed["checkpoint_write"]
    # The truncated write was a temporary file; the resumed run removed it with its next write.
    leftovers = [p.name for p in (workdir / "checkpoint").iterdir()]
    assert sorted(leftovers) == ["best.weights.h5", "latest.weights.h5", "training_metadata.json"]
