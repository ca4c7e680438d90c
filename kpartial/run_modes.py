"""How a run meets its workdir: new, resumed, finished, or seen by a worker that is not the chief.

`claimed` is the one way every run (a single run, the auto_tune run and each of its candidates)
enters its workdir: the chief claims it (`kpartial.workdir.claim`: a lock, no clobbering), checks
that a resumed run is resumed with the settings it started with, reports a finished run instead of
training it again, and writes `config.json` (and the caller's files) for a new run. A worker that
is not the chief reads the chief's workdir and never writes it.
"""

import contextlib
import inspect
import json
import os
from typing import NamedTuple

from kpartial import config as config_lib
from kpartial import label_pruning, losses, pseudo_labels, workdir

# Flat config fields that may differ between a run and its resumption: how it is run, not what it
# trains (a different strategy sums the same gradients in another order).
RESUME_MAY_CHANGE = ("verbose", "strategy")


class Claim(NamedTuple):
    """What `claimed` found: whether the run resumes, and a finished run's metrics (or None)."""

    resuming: bool
    finished: object = None


@contextlib.contextmanager
def claimed(config, placement, resume=False, overwrite=False, files=None, log=print):
    """Enters the run's workdir; yields a `Claim`.

    Args:
      config: the run's `kpartial.config.Config` (written to `config.json` for a new run).
      placement: the run's `distribution.Placement`; only the chief claims and writes.
      resume: continue the run in the workdir (a new one if there is none).
      overwrite: replace a previous run (only kpartial's own artifacts are removed).
      files: {name: text} written into the workdir of a new run (e.g. the resolved flags).
      log: prints one line.

    Raises:
      WorkdirError: the workdir is unusable, in use, holds a run and neither flag was given, or
        holds a run started with other settings than `config` and `resume` was asked.
    """
    path = config.workdir
    if not path:
        yield Claim(False)
        return
    if not placement.is_chief:
        resuming = resume and os.path.isfile(os.path.join(path, "config.json"))
        finished = resuming and _finished(config, log)
        yield Claim(
            resuming, {"worker": placement.place.index, "finished": True} if finished else None
        )
        return
    with workdir.claim(path, resume, overwrite, log) as resuming:
        if resuming and _finished(config, log):
            yield Claim(True, read_json(os.path.join(path, workdir.FINISHED)))
            return
        if not resuming:
            workdir.write_atomically(os.path.join(path, "config.json"), config_json(config))
            for name, text in (files or {}).items():
                workdir.write_atomically(os.path.join(path, name), text)
        yield Claim(resuming)


def _finished(config, log):
    """Whether the resumed run in the workdir finished (after checking its settings)."""
    check_resumable(config)
    if not workdir.is_finished(config.workdir):
        return False
    log(f"--resume: {config.workdir} holds a finished run; nothing to train")
    return True


def config_json(config):
    return json.dumps(config.flat(), indent=2)


def read_json(path):
    """The JSON in `path`; a corrupt file is a `WorkdirError` naming it."""
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise workdir.WorkdirError(
            f"{path} is not valid JSON ({e}); the run cannot be read"
        ) from None


def _comparable(config):
    """The flat config in the words that decide the run: the pruning schedule and the first
    pseudo-label refresh in epoch counts (a share and its count say the same) and the loss options without those that restate the
    loss's defaults (`negative_focusing` stays: given or not decides it with complete labels)."""
    flat = config.flat()
    epochs = config.runtime.epochs
    schedule = label_pruning.in_epoch_counts(config.pruning.schedule, epochs)
    flat["prune_schedule"] = [list(entry) for entry in schedule]
    flat["pseudo_start_epoch"] = pseudo_labels.start_epoch_of(config)
    defaults = inspect.signature(losses.LOSSES[config.loss.method]).parameters
    flat["loss_options"] = {
        name: value
        for name, value in config.loss.parsed_options.items()
        if name == "negative_focusing" or defaults[name].default != value
    }
    return flat


def check_resumable(config):
    """Raises `WorkdirError` unless the workdir's run was started with `config`'s settings."""
    path = os.path.join(config.workdir, "config.json")
    if not os.path.isfile(path):
        raise workdir.WorkdirError(
            f"--resume: {config.workdir} has no config.json, so it is not a resumable run"
        )
    try:
        started = config_lib.started_config(read_json(path))
    except (ValueError, TypeError) as e:
        if isinstance(e, workdir.WorkdirError):
            raise
        raise workdir.WorkdirError(f"--resume: {path} is not a kpartial config ({e})") from None
    # A field changed when it reads otherwise and means otherwise (see `_comparable`).
    was, now = started.flat(), config.flat()
    was_meant, now_meant = _comparable(started), _comparable(config)
    changed = [
        f"{name}={was.get(name)!r} -> {now[name]!r}"
        for name in now
        if name not in RESUME_MAY_CHANGE
        and was.get(name) != now[name]
        and was_meant.get(name) != now_meant[name]
    ]
    if changed:
        raise workdir.WorkdirError(
            f"--resume: the run in {config.workdir} was started with other settings "
            f"({'; '.join(changed)}); resume with the same flags, or --overwrite"
        )
