"""The nested config: flat names, rules checked once, old config.json files, generated flags."""

import functools
import json
import os
import subprocess
import sys

import keras
import pytest

from kpartial import config as config_lib
from kpartial import pseudo_labels, run_modes, training, workdir
from kpartial.config import Config
from tests.helpers import ROOT

# The config.json of a run started by kpartial before the config was nested (99e6da9): flat, with
# the pseudo-label rule's options as flags of their own and no pseudo_rule_options.
BEFORE_NESTING = {
    "train_data": "synthetic:train", "test_data": "", "train_data_options": "",
    "test_data_options": "", "validation_data": "", "validation_data_options": "",
    "on_bad_input": "error", "test_fraction": 0.0, "split_seed": 0, "simulation": "",
    "verify_images": True, "method": "kpartial", "loss_options": "", "known_fraction": 0.2,
    "seed": 1, "epochs": 5, "batch_size": 256, "learning_rate": 0.001, "weight_decay": 0.0001,
    "hidden_units": [512], "dropout": 0.2, "jit_compile": "auto", "steps_per_execution": 16,
    "class_stats": "", "pseudo_labels": "auto", "pseudo_start_epoch": 1, "pseudo_every": 1,
    "pseudo_mode": "prior", "pseudo_positive_threshold": 0.5, "pseudo_negative_threshold": 0.05,
    "pseudo_negative_coverage": 0.2, "pseudo_weight": 0.5, "pseudo_max_positives": 16,
    "pseudo_min_precision": 0.0, "pruning": "auto", "prune_schedule": [[3, 0.25]],
    "prune_criterion": "fit_well", "backbone": "mobilenet_v3_small", "backbone_weights": "",
    "image_size": 224, "eval_every": 1, "validation_fraction": 0.1, "select_epoch": "best",
    "auto_tune": "off", "monitor_test": False, "strategy": "auto", "workdir": "/w", "verbose": 0,
}  # fmt: skip


def test_flat_round_trip_and_parts():
    config = Config.from_flat(epochs=7, pseudo_every=2, loss_options="balance=0.5")
    assert config.runtime.epochs == 7 and config.pseudo.every == 2
    assert config.loss.options == "balance=0.5"
    assert Config.from_flat(**json.loads(json.dumps(config.flat()))) == config
    assert config.replace(epochs=8).runtime.epochs == 8 and config.runtime.epochs == 7
    with pytest.raises(ValueError, match="unknown config fields: nope"):
        Config.from_flat(nope=1)


def test_a_config_json_from_before_the_nesting_reads_as_it_ran():
    started = config_lib.started_config(BEFORE_NESTING)
    # The rule's options are the rule's: the prior rule takes negative_coverage; the fixed rule's
    # threshold it never read is dropped, as the run dropped it.
    assert started.pseudo.rule_options == "negative_coverage=0.2"
    now = Config.from_flat(
        known_fraction=0.2, epochs=5, pseudo_start_epoch=1, pseudo_every=1,
        pseudo_rule_options="negative_coverage=0.2", prune_schedule=((3, 0.25),),
        auto_tune="off", missing_labels="counts", workdir="/w",
    )  # fmt: skip
    assert started == now


def test_resume_compares_an_old_config_json_in_todays_terms(tmp_path):
    old = {**BEFORE_NESTING, "workdir": str(tmp_path)}
    (tmp_path / "config.json").write_text(json.dumps(old))
    same = config_lib.started_config(old)
    run_modes.check_resumable(same)  # no error: the same settings
    with pytest.raises(workdir.WorkdirError, match="epochs=5 -> 6"):
        run_modes.check_resumable(same.replace(epochs=6))


@pytest.mark.parametrize(
    "values, message",
    [
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
        ({"method": "nope"}, "method must be one of"),
        ({"pseudo_mode": "nope"}, "pseudo_mode must be one of"),
        ({"backbone": "nope"}, "backbone must be one of"),
        ({"prune_criterion": "nope"}, "prune_criterion must be one of"),
        ({"pseudo_rule_options": "negative_threshold=0.1"}, "rule 'prior' has no options"),
        ({"loss_options": "nope=1"}, "loss_options='nope=1'"),
        ({"loss_options": "balance=nan"}, "loss_options: balance must be a finite number"),
        ({"epochs": 3, "pseudo_start_epoch": 10}, "pseudo_start_epoch=10 is not before epochs=3"),
        ({"pseudo_start_epoch": 1.5}, "pseudo_start_epoch must be a count of epochs, a share"),
        ({"prune_schedule": "5:0.25", "epochs": 5, "pseudo_labels": "off"}, "prune_schedule"),
        ({"validation_fraction": 0.0}, "select_epoch=best needs a validation split"),
        ({"known_fraction": 0.0}, r"known_fraction must be in \(0.0, 1.0\]"),
        ({"hidden_units": (0,)}, "hidden_units must be positive integers"),
        ({"class_stats": "/no/such.csv"}, "class_stats: file not found"),
    ],
)
def test_every_rule_is_one_line_from_python(values, message):
    with pytest.raises(ValueError, match=message) as raised:
        Config.from_flat(**values)
    assert "\n" not in str(raised.value)


def test_the_default_start_fits_any_epochs():
    assert [pseudo_labels.start_epoch_of(Config.from_flat(epochs=n)) for n in (1, 2, 3, 30)] == [
        None,
        1,
        1,
        10,
    ]
    assert Config.from_flat(pseudo_start_epoch=10.0).pseudo.start_epoch == 10  # a count stays one


def test_rules_of_one_method_stay_with_it():
    # Pseudo labels are kpartial's: another method does not need a start before the epochs.
    Config.from_flat(method="ignore", epochs=3)
    Config.from_flat(method="ignore", epochs=3, prune_schedule="0.5:0.25")


def test_every_field_has_a_flag_with_its_help():
    names = [part.flag_name(field) for _, part, field in Config.fields()]
    assert len(names) == len(set(names))
    assert all(field.metadata["help"] for _, _, field in Config.fields())
    tools = os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools")
    code = (
        f"import sys; sys.path.insert(0, {tools!r}); import train_flags; "
        "from absl import flags; print(' '.join(sorted(flags.FLAGS)))"
    )
    defined = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(names) <= set(defined)
    assert set(config_lib.RULE_OPTION_FLAGS) <= set(defined)  # old flagfiles keep working


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise KeyboardInterrupt  # killed: the checkpoint holds the epochs before this one


def test_a_run_started_before_the_nesting_resumes_to_the_same_result(tiny_npz, tmp_path):
    """A killed run whose config.json has the flat fields of 99e6da9 (the pseudo-label rule's
    options as fields of their own, no pseudo_rule_options or missing_labels) resumes."""
    train_spec, test_spec = tiny_npz
    values = {
        "train_data": train_spec,
        "test_data": test_spec,
        "known_fraction": 0.3,
        "epochs": 4,
        "pseudo_start_epoch": 1,
        "pseudo_every": 1,
        "pseudo_rule_options": "negative_coverage=0.2",
        "prune_schedule": "0.5:0.25",
        "hidden_units": (16,),
        "auto_tune": "off",
        "missing_labels": "counts",  # as runs before measuring existed read their rates
    }
    whole = training.run(Config.from_flat(**values), log=lambda line: None)
    config = Config.from_flat(**values, workdir=str(tmp_path / "w"))
    with pytest.raises(KeyboardInterrupt):
        training.run(config, callbacks=[_StopAfter(3)], log=lambda line: None)
    old = {**config.flat()}
    for name in ("pseudo_rule_options", "missing_labels"):
        del old[name]
    old.update(
        pseudo_positive_threshold=0.5, pseudo_negative_threshold=0.05, pseudo_negative_coverage=0.2
    )
    old["prune_schedule"] = [[2, 0.25]]  # flags wrote the schedule in epoch counts
    (tmp_path / "w" / "config.json").write_text(json.dumps(old))
    lines = []
    resumed = training.run(config, resume=True, log=lines.append)
    assert any(line.startswith("--resume: continuing") for line in lines)
    assert resumed["map"] == whole["map"]


def test_the_configs_names_are_those_of_the_registries():
    """The config lists the names without importing the modules that implement them."""
    from kpartial import distribution, label_pruning, losses, models, pseudo_label_rules

    assert tuple(config_lib.METHODS) == tuple(losses.LOSSES)
    for name, words in config_lib.METHODS.items():  # the opening words of the loss's docstring
        loss = losses.LOSSES[name]
        if isinstance(loss, functools.partial):  # one loss in several modes: its words, the mode
            words, mode = words.rsplit(", ", 1)
            assert mode == ", ".join(map(str, loss.args)), name
            loss = loss.func
        assert " ".join(loss.__doc__.split()).startswith(words), name
    assert config_lib.PSEUDO_RULES == tuple(pseudo_label_rules.RULES)
    assert config_lib.PRUNE_CRITERIA == tuple(label_pruning.CRITERIA)
    assert config_lib.BACKBONES == tuple(models.BACKBONES)
    assert config_lib.STRATEGIES == distribution.STRATEGIES


@pytest.mark.parametrize(
    "tool", ["train.py", "compare.py", "simulate.py", "make_tfrecords.py", "evaluate.py"]
)
def test_a_tool_parses_its_flags_before_importing_tensorflow(tool):
    """A typo or --helpshort is answered without starting TensorFlow (seconds, not ten)."""
    for flag in ("--epochz=3", "--helpshort"):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", os.path.join(ROOT, "tools", tool), flag],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 1, proc.stderr[-2000:]
        imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
        assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras")], (tool, flag)
