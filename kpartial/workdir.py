"""A run's workdir: claimed by one run at a time, never clobbered, resumable.

A workdir holds one training run. `claim` refuses a folder that already holds a started or
finished run unless the caller asks to `overwrite` it (then only kpartial's own artifacts, listed
in `ARTIFACTS`, are removed; anything else the user keeps there stays) or to `resume` it. A lock
file with the owner's host and pid keeps two runs out of one workdir at once; a lock whose process
is gone (a killed run) is stale and taken over.
"""

import contextlib
import errno
import json
import os
import shutil
import socket

import numpy as np

# Everything a run writes into its workdir. A workdir "holds a run" when any of these exist.
ARTIFACTS = (
    "flags.txt",
    "config.json",
    "metrics.json",
    "history.json",
    "class_stats.csv",
    "network.keras",
    "label_names.txt",
    "thresholds.npy",
    "thresholds.csv",
    "ap_by_frequency.png",
    "checkpoint",
    "checkpoint.weights.h5",  # a single-file checkpoint (older workdirs); --overwrite removes it
    "tensorboard",
    "auto_tune",  # the candidates' runs (kpartial.auto_tune)
)
LOCK = ".kpartial.lock"
FINISHED = "metrics.json"


class WorkdirError(ValueError):
    """The workdir cannot be used as asked; the message names it."""


def check_usable(path, flag="--workdir"):
    """Raises `WorkdirError` (one line naming `flag`) if `path` cannot be a workdir."""
    if not path:
        raise WorkdirError(f"{flag} is empty: give the folder the run writes into")
    if os.path.exists(path) and not os.path.isdir(path):
        raise WorkdirError(f"{flag}={path} is a file, not a folder")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(os.path.abspath(parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WorkdirError(f"{flag}={path}: {parent} is not writable")


def existing_artifacts(path):
    """The names in `ARTIFACTS` that exist in the folder `path`."""
    return [name for name in ARTIFACTS if os.path.lexists(os.path.join(path, name))]


def holds_kpartial_run(path):
    """Whether `path` holds a run kpartial wrote: a config.json of a kpartial config (the first
    file a run writes), so `--overwrite` never removes a user's files of the same names."""
    try:
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"train_data", "method", "workdir"} <= set(config)


def is_finished(path):
    """Whether the workdir `path` holds a finished run (its `FINISHED` file)."""
    return os.path.isfile(os.path.join(path, FINISHED))


def process_alive(pid):
    """Whether a process `pid` runs on this machine (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # somebody else's live process
        return True
    return True


def _take_lock(path):
    lock = os.path.join(path, LOCK)
    owner = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(lock) as f:
                    held = json.load(f)
                host, pid = held["host"], int(held["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                held, host, pid = None, None, None  # unreadable: a write cut short by a kill
            if held is not None and (host != owner["host"] or process_alive(pid)):
                where = f"pid {pid}" + ("" if host == owner["host"] else f" on {host}")
                raise WorkdirError(
                    f"--workdir={path} is in use by another run ({where}); wait for it or stop it "
                    f"(a lock left by a killed run on this host is detected and taken over)"
                ) from None
            os.remove(lock)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(owner, f)
        return lock
    raise WorkdirError(f"--workdir={path}: could not take the lock {lock}")


@contextlib.contextmanager
def claim(path, resume=False, overwrite=False, log=print):
    """Claims `path` for one run; yields True when a previous run is to be resumed.

    Args:
      path: the workdir.
      resume: continue the run in `path` from its last checkpoint (a new run if there is none).
      overwrite: remove kpartial's artifacts of a previous run first (nothing else).
      log: prints one line.

    Raises:
      WorkdirError: naming `--workdir` if the folder is unusable, holds a run and neither flag was
        given, or is in use by another live run.
    """
    if resume and overwrite:
        raise WorkdirError("give --resume or --overwrite, not both")
    check_usable(path)
    created = not os.path.exists(path)
    os.makedirs(path, exist_ok=True)
    lock = _take_lock(path)
    try:
        found = existing_artifacts(path)
        if found and overwrite and not holds_kpartial_run(path):
            raise WorkdirError(
                f"--overwrite: {path} holds {', '.join(found[:4])} but no config.json that "
                "kpartial wrote, so they are not a kpartial run's; move them, or choose another "
                "--workdir"
            )
        if found and overwrite:
            for name in found:
                target = os.path.join(path, name)
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                else:
                    os.remove(target)
            log(f"--overwrite: removed the previous run's {', '.join(found)} from {path}")
            found = []
        if found and not resume:
            state = "a finished run" if is_finished(path) else "a started run"
            raise WorkdirError(
                f"--workdir={path} holds {state} ({', '.join(found[:4])}"
                f"{', ...' if len(found) > 4 else ''}); pass --resume to continue it or "
                "--overwrite to replace it"
            )
        if resume and not found:
            log(f"--resume: nothing to resume in {path}; starting a new run")
        yield bool(found)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(lock)
        if created and not os.listdir(path):  # failed before writing anything: leave no trace
            os.rmdir(path)


def replace_atomically(path, write, suffix="", size=0):
    """Calls `write(tmp)` for a temporary sibling of `path`, syncs it and moves it onto `path`.

    A kill at any moment leaves either the old file or the new one, never a part; a write that
    fails (a full disk) removes its temporary and leaves the old file. `suffix` ends the
    temporary's name too (Keras needs `.weights.h5` on the files it writes). With `size`, the
    bytes the write needs, a disk without them is refused before anything is written: h5py, cut
    short by a full disk, leaves open files that fail again and can crash the process at exit.

    Raises:
      OSError: ENOSPC when the disk has fewer than `size` bytes free; whatever `write` raises.
    """
    tmp = f"{path[: len(path) - len(suffix)]}.tmp-{os.getpid()}{suffix}"
    if size and shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < size:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def weights_file_bytes(*objects):
    """A generous size of the .weights.h5 file of the variables of `objects` (models, optimizers)."""
    values = sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for o in objects for v in o.variables
    )
    return int(1.1 * values) + (1 << 16)  # HDF5's headers and per-dataset metadata


def write_atomically(path, text):
    """Writes `text` to `path` with `replace_atomically`."""

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    replace_atomically(path, write)


def json_safe(value):
    """Replaces NaN/inf floats (e.g. mAP with no evaluable class) by None, recursively."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path, value):
    """`value` as strict JSON (NaN/inf written as null), atomically (see `write_atomically`)."""
    write_atomically(path, json.dumps(json_safe(value), indent=2, allow_nan=False))
