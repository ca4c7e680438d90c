"""Nothing lost, nothing overwritten: workdirs, export targets, labels used as given, and the
errors a user meets as one line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kpartial import data, export, models, run_inputs, training, workdir
from kpartial.config import Config
from kpartial.data.readers import synthetic
from tests.helpers import ROOT

QUIET = lambda line: None


def _npz(path, labels=None, num_features=6, seed=0):
    d = synthetic.make_imbalanced_features(
        num_examples=200, num_classes=5, num_features=num_features, seed=seed
    )
    labels = d.labels if labels is None else labels
    np.savez(path, x=d.features, y=labels, label_names=np.array(d.label_names))
    return f"npz:{path}"


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    root = tmp_path_factory.mktemp("safety")
    return _npz(root / "train.npz"), _npz(root / "test.npz", seed=1)


def _config(specs, workdir_path, **overrides):
    train_spec, test_spec = specs
    settings = {
        "epochs": 1,
        "pseudo_labels": "off",
        "hidden_units": (8,),
        "batch_size": 64,
        "auto_tune": "off",
    }
    return Config.from_flat(
        train_data=train_spec,
        test_data=test_spec,
        workdir=str(workdir_path),
        **{**settings, **overrides},
    )


# ---------------------------------------------------------------------------- workdirs


@pytest.fixture(scope="module")
def finished(specs, tmp_path_factory):
    path = tmp_path_factory.mktemp("finished") / "run"
    training.run(_config(specs, path), log=QUIET)
    return path


def test_a_workdir_holding_a_run_is_refused(specs, finished):
    before = sorted(os.listdir(finished))
    with pytest.raises(workdir.WorkdirError, match="holds a finished run.*--resume.*--overwrite"):
        training.run(_config(specs, finished), log=QUIET)
    assert sorted(os.listdir(finished)) == before


def test_overwrite_removes_only_kpartials_artifacts(specs, tmp_path):
    path = tmp_path / "run"
    training.run(_config(specs, path), log=QUIET)
    (path / "my_notes.txt").write_text("mine")
    (path / "my_data").mkdir()
    lines = []
    training.run(_config(specs, path, seed=2), log=lines.append, overwrite=True)
    assert (path / "my_notes.txt").read_text() == "mine" and (path / "my_data").is_dir()
    assert json.loads((path / "metrics.json").read_text())["seed"] == 2
    assert any(line.startswith("--overwrite: removed the previous run's") for line in lines)


def test_resume_of_a_finished_run_trains_nothing(specs, finished):
    lines = []
    result = training.run(_config(specs, finished), log=lines.append, resume=True)
    assert result == json.loads((finished / "metrics.json").read_text())
    assert lines == [f"--resume: {finished} holds a finished run; nothing to train"]


def test_resume_with_other_settings_is_refused(specs, finished):
    with pytest.raises(workdir.WorkdirError, match=r"other settings \(epochs=1 -> 2\)"):
        training.run(_config(specs, finished, epochs=2), log=QUIET, resume=True)


def test_a_workdir_in_use_is_refused_and_a_stale_lock_taken_over(specs, tmp_path):
    path = tmp_path / "run"
    path.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"host": os.uname().nodename, "pid": sleeper.pid}
        (path / workdir.LOCK).write_text(json.dumps(lock))
        with pytest.raises(
            workdir.WorkdirError, match=f"in use by another run \\(pid {sleeper.pid}"
        ):
            training.run(_config(specs, path), log=QUIET)
    finally:
        sleeper.kill()
        sleeper.wait()
    training.run(_config(specs, path), log=QUIET)  # its owner is gone: the lock is stale
    assert (path / "metrics.json").is_file() and not (path / workdir.LOCK).exists()


def test_a_workdir_that_is_a_file_or_empty_is_one_clear_line(specs, tmp_path, run_tool):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(workdir.WorkdirError, match="is a file, not a folder"):
        training.run(_config(specs, a_file), log=QUIET)
    proc = run_tool("train.py", f"--workdir={a_file}", "--epochs=1", "--pseudo_labels=off")
    assert proc.returncode == 1
    assert (
        proc.stderr.strip().splitlines()[-1] == f"error: --workdir={a_file} is a file, not a folder"
    )
    proc = run_tool("train.py", "--workdir=", "--epochs=1", "--pseudo_labels=off")
    assert proc.returncode != 0 and "--workdir is empty" in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_workdir_is_one_clear_line(specs, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(workdir.WorkdirError, match="is not writable"):
        training.run(_config(specs, locked / "run"), log=QUIET)


def test_bad_input_leaves_no_trace_that_blocks_the_next_attempt(specs, tmp_path):
    path = tmp_path / "run"
    missing = (f"npz:{tmp_path / 'missing.npz'}", specs[1])
    with pytest.raises(data.DataError, match="missing.npz"):
        training.run(_config(missing, path), log=QUIET)
    assert not path.exists()
    empty = tmp_path / "empty_simulation.npz"
    empty.write_bytes(b"")
    with pytest.raises(data.DataError, match="empty_simulation.npz: not a kpartial simulation"):
        training.run(_config(specs, path, simulation=str(empty)), log=QUIET)
    assert not path.exists()
    training.run(_config(specs, path), log=QUIET)


def test_a_data_error_is_one_line_without_the_flag_help(tmp_path, run_tool):
    proc = run_tool(
        "train.py", f"--train_data=npz:{tmp_path / 'nope.npz'}", f"--workdir={tmp_path}/w"
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "nope.npz" in proc.stderr
    assert "--helpfull" not in proc.stderr and "flags:" not in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--learning_rate=nan", "--pseudo_weight=inf"])
def test_non_finite_hyperparameters_fail_at_flag_parsing(flag, tmp_path, run_tool):
    proc = run_tool("train.py", flag, f"--workdir={tmp_path / 'w'}")
    assert proc.returncode != 0
    name, value = flag[2:].split("=")
    assert f"Flags parsing error: {name} must be a finite number, got {value}" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_non_finite_hyperparameters_are_refused_by_the_config():
    with pytest.raises(ValueError, match="learning_rate must be a finite number"):
        Config.from_flat(learning_rate=float("nan"))


# ---------------------------------------------------------------------------- export targets


@pytest.mark.parametrize("name", ["..", ".", "../../x", "/abs/dir", "a/b", "", "x y"])
def test_an_export_name_is_one_folder_name(name):
    with pytest.raises(export.ExportError, match="must be one folder name"):
        export.check_export_name(name)


@pytest.mark.parametrize(
    "script, flag", [("export.py", "--name=.."), ("train.py", "--export_name=../../x")]
)
def test_a_path_as_export_name_is_refused_at_flag_parsing(script, flag, tmp_path, run_tool):
    proc = run_tool(script, f"--workdir={tmp_path / 'w'}", flag)
    assert proc.returncode != 0
    assert f"flag {flag}: export name" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_export_never_replaces_what_kpartial_did_not_write(finished, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(export.ExportError, match="exists"):
            export.export_workdir(str(finished), str(target), overwrite=overwrite)
    assert (target / "precious.txt").read_text() == "keep me"
    with pytest.raises(export.ExportError, match="is or contains the workdir"):
        export.export_workdir(str(finished), str(finished), overwrite=True)
    with pytest.raises(export.ExportError, match="is or contains the workdir"):
        export.export_workdir(str(finished), str(finished.parent), overwrite=True)
    assert (finished / "metrics.json").is_file()


def test_export_replaces_its_own_export_only_with_overwrite(finished, tmp_path):
    target = tmp_path / "model"
    export.export_workdir(str(finished), str(target))
    with pytest.raises(export.ExportError, match="pass --overwrite"):
        export.export_workdir(str(finished), str(target))
    export.export_workdir(str(finished), str(target), overwrite=True)
    assert export.is_kpartial_export(str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary left
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # as mkdir makes a folder


def test_a_failed_export_leaves_nothing_under_the_final_name(finished, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_workdir(str(finished), str(tmp_path / "model"))
    assert list(tmp_path.iterdir()) == []


def test_export_tool_refuses_an_existing_target(finished, tmp_path, run_tool):
    target = tmp_path / "t"
    target.mkdir()
    proc = run_tool("export.py", f"--workdir={finished}", f"--export_dir={target}", "--overwrite")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: export target {target} exists and is not a kpartial export "
        f"(no assets/{export.MARKER}); not replacing it even with --overwrite"
    )


# ---------------------------------------------------------------------------- serving


def test_serve_refuses_nan_and_inf_naming_x(tmp_path):
    network = models.build_mlp(3, 2, hidden_units=(4,), dropout=0.0)
    path = export.export_saved_model(network, ["a", "b"], [0.5, 0.5], str(tmp_path / "m"))
    serve, _, _ = export.load_serving(path)
    spec = serve.structured_input_signature[1]["x"]
    assert spec.shape.as_list() == [None, 3] and spec.dtype == tf.float32
    for bad in (np.nan, np.inf):
        x = np.array([[0.0, bad, 1.0]], np.float32)
        with pytest.raises(tf.errors.InvalidArgumentError, match="input x contains NaN or inf"):
            serve(x=x)


def test_an_image_export_records_its_size_and_evaluation_uses_it(tmp_path):
    import keras
    from PIL import Image

    x = keras.Input((16, 16, 3), name="x")
    network = keras.Model(x, keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(x)))
    path = export.export_saved_model(network, ["a", "b"], [0.5, 0.5], str(tmp_path / "m"))
    assert export.read_marker(path)["image_size"] == [16, 16]
    rows = ["image,a,b"]
    for i in range(4):
        Image.new("RGB", (40, 30), (60 * i, 20, 90)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{1 if i % 2 else -1},{-1 if i % 2 else 1}")
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    spec = f"manifest:{tmp_path / 'test.csv'}"
    result = export.evaluate_saved_model(path, spec, data_options="image_column=image")
    assert result["image_size"] == 16
    with pytest.raises(data.DataError, match="image_size=224: the model .* takes 16 x 16 images"):
        export.evaluate_saved_model(path, spec, image_size=224, data_options="image_column=image")


def test_evaluate_names_a_wrong_feature_width_and_writes_valid_json(finished, tmp_path):
    model = tmp_path / "m"
    export.export_workdir(str(finished), str(model))
    wide = _npz(tmp_path / "wide.npz", num_features=9)
    with pytest.raises(data.DataError, match="has 9 features per example but the model"):
        export.evaluate_saved_model(str(model), wide)
    # A test set where no class has both a positive and a negative: mAP is undefined.
    d = synthetic.make_imbalanced_features(num_examples=200, num_classes=5, num_features=6)
    one_sided = np.where(d.labels != 0, 1, 0).astype(np.int8)
    spec = _npz(tmp_path / "one_sided.npz", labels=one_sided)
    export.evaluate_saved_model(str(model), spec, out_dir=str(tmp_path / "out"))
    text = (tmp_path / "out" / "metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)["map"] is None


# ---------------------------------------------------------------------------- labels as given


def test_labels_are_used_as_given_by_default(specs, tmp_path):
    d = synthetic.make_imbalanced_features(num_examples=200, num_classes=5, num_features=6)
    partial = np.where(np.random.default_rng(0).random(d.labels.shape) < 0.4, d.labels, 0)
    partial[:, 0] = d.labels[:, 0]  # every row keeps a known label
    spec = _npz(tmp_path / "partial.npz", labels=partial.astype(np.int8))
    config = _config((spec, specs[1]), tmp_path / "run")
    assert config.data.known_fraction == 1.0
    train, _ = run_inputs.load_data(config)
    lines = []
    np.testing.assert_array_equal(run_inputs.training_labels(config, train, lines.append), partial)
    assert lines == []
    thinned = run_inputs.training_labels(
        _config((spec, specs[1]), tmp_path / "run", known_fraction=0.5), train, lines.append
    )
    assert np.count_nonzero(thinned) < np.count_nonzero(partial)
    assert len(lines) == 1 and lines[0].startswith(
        "--known_fraction=0.5 thins labels that are already partial"
    )


def test_presets_do_not_hide_labels():
    for cfg in (ROOT / "flags").glob("*.cfg"):
        for line in cfg.read_text().splitlines():
            if line.startswith("--known_fraction="):
                assert float(line.split("=")[1]) == 1.0, cfg.name


def test_train_and_test_must_agree_on_features(specs, tmp_path):
    wide = _npz(tmp_path / "wide.npz", num_features=7)
    config = _config((specs[0], wide), tmp_path / "run")
    with pytest.raises(data.DataError, match="has 6 features but test .*wide.npz has 7"):
        run_inputs.load_data(config)


# ----------------------------------------------------------------------------
# Settings that could only fail after training are refused first, in one line


def _tiny(tiny_npz, tmp_path, **overrides):
    train_spec, test_spec = tiny_npz
    values = {
        "train_data": train_spec,
        "test_data": test_spec,
        "epochs": 2,
        "hidden_units": (8,),
        "auto_tune": "off",
        "workdir": str(tmp_path / "w"),
    }
    return Config.from_flat(**{**values, **overrides})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"known_fraction": 1e-9}, "no known training label is left"),
        ({"prune_schedule": "1:0.99"}, "would leave none active"),
    ],
)
def test_inputs_a_run_could_only_fail_on_are_refused_before_anything_is_written(
    tiny_npz, tmp_path, overrides, message
):
    with pytest.raises(data.DataError, match=message):
        training.run(_tiny(tiny_npz, tmp_path, **overrides), log=lambda line: None)
    assert not (tmp_path / "w").exists()


def test_a_class_name_with_a_line_break_is_refused_before_training(tmp_path):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    y = np.where(x[:, :2] > 0, 1, -1).astype(np.int8)
    np.savez(path, x=x, y=y, label_names=np.array(["a", "b\nc"]))
    config = Config.from_flat(
        train_data=f"npz:{path}",
        test_fraction=0.3,
        epochs=1,
        auto_tune="off",
        workdir=str(tmp_path / "w"),
    )
    with pytest.raises(data.DataError, match="holds a line break"):
        training.run(config, log=lambda line: None)
    assert not (tmp_path / "w").exists()


def test_a_diverging_run_stops_at_its_first_non_finite_loss_naming_the_likely_flag(
    tiny_npz, tmp_path
):
    config = _tiny(tiny_npz, tmp_path, learning_rate=1e30, epochs=3, pseudo_labels="off")
    with pytest.raises(
        ValueError, match=r"epoch \d: the training loss is nan.*learning_rate=1e\+30"
    ):
        training.run(config, log=lambda line: None)
    assert not (tmp_path / "w" / "metrics.json").exists()


def test_overwrite_removes_only_a_run_kpartial_wrote(tiny_npz, tmp_path):
    """A folder with the user's own config.json, checkpoint/ and tensorboard/ is not a run."""
    folder = tmp_path / "w"
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "tensorboard").mkdir()
    (folder / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(workdir.WorkdirError, match="no config.json that kpartial wrote"):
        training.run(_tiny(tiny_npz, tmp_path, epochs=1), overwrite=True, log=lambda line: None)
    assert (folder / "config.json").read_text() == '{"my": "settings"}'
    assert (folder / "checkpoint").is_dir() and (folder / "tensorboard").is_dir()


def test_overwrite_checks_the_inputs_before_it_removes_a_finished_run(tiny_npz, tmp_path):
    config = _tiny(tiny_npz, tmp_path, epochs=1)
    training.run(config, log=lambda line: None)
    before = (tmp_path / "w" / "metrics.json").read_text()
    with pytest.raises(data.DataError, match="typo.npz"):
        training.run(
            config.replace(train_data=f"npz:{tmp_path / 'typo.npz'}"),
            overwrite=True,
            log=lambda line: None,
        )
    assert (tmp_path / "w" / "metrics.json").read_text() == before  # the finished run stays


# ---------------------------------------------------------------------------- a full disk

# tools/train.py with a disk that is full from the second checkpoint write on (the weights file
# of epoch 2): shutil.disk_usage reports no free byte under checkpoint/ after the first call.
FULL_FROM_THE_SECOND_CHECKPOINT = r"""
import collections, runpy, shutil, sys
sys.path.insert(0, sys.argv[1])
real, calls = shutil.disk_usage, collections.Counter()

def disk_usage(path):
    usage = real(path)
    calls[path] += 1
    if "checkpoint" in str(path) and sum(calls.values()) > 1:
        return usage._replace(free=0)
    return usage

shutil.disk_usage = disk_usage
sys.argv = [sys.argv[1] + "/train.py", *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_full_disk_stops_the_run_in_one_line_and_keeps_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    flags = ["--epochs=3", "--select_epoch=last", f"--workdir={run}", "--verbose=0"]

    def python(*args):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        return subprocess.run(
            [sys.executable, *args], check=False, capture_output=True, text=True, cwd=ROOT,
            env=env, timeout=300,
        )  # fmt: skip

    proc = python("-c", FULL_FROM_THE_SECOND_CHECKPOINT, str(ROOT / "tools"), *flags)
    assert proc.returncode == 1, proc.stderr[-3000:]
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(
        f"error: no space left on device writing {run / 'checkpoint' / 'latest.weights.h5'}: "
    )
    checkpoints = sorted(p.name for p in (run / "checkpoint").iterdir())
    assert checkpoints == ["latest.weights.h5", "training_metadata.json"]  # no temporary
    assert json.loads((run / "checkpoint" / "training_metadata.json").read_text()) == {"epoch": 1}
    resumed = python(str(ROOT / "tools" / "train.py"), *flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"continuing {run} after epoch 1" in resumed.stdout


def test_a_write_cut_short_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "latest.weights.h5"
    target.write_text("the last checkpoint")

    def write(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError(28, "No space left on device", tmp)

    with pytest.raises(OSError, match="No space left"):
        workdir.replace_atomically(str(target), write, ".weights.h5")
    assert [p.name for p in tmp_path.iterdir()] == ["latest.weights.h5"]
    assert target.read_text() == "the last checkpoint"
