"""Choosing kpartial's focusing of the known negatives on the validation split (`auto_tune`).

With partial labels no single focusing gamma of the known negatives (`kpartial.losses.
StatisticsWeightedLoss`) is best everywhere: gamma 2 (the loss's default) wins on the long-tailed
label spaces, gamma 0 (plain BCE on the known negatives) on others such as Tox21's measured labels,
and which one wins cannot be read from the label statistics (the per-set figures, and the cost of
tuning, are in benchmarks/README.md, "This version"). So a run trains both, each as a run of its
own (in `WORKDIR/auto_tune/<candidate>/` when there is a workdir), and keeps the one whose
validation mAP at its selected epoch is higher; a tie keeps gamma 2. The validation split
decides, as it decides the epoch; the test set plays no part in the choice (each candidate's own
metrics are computed after it finished training, and the choice reads only their validation
mAP). The chosen candidate's network, thresholds and history are copied into the workdir, and
`metrics.json` gets an `auto_tune` section with both candidates' validation mAP. Cost: two runs.

`auto_tune="auto"` tunes where it can help and is possible: `method="kpartial"` with partial
training labels (complete labels take gamma 4, see `kpartial.class_stats`), a validation split,
no `negative_focusing` among the loss options (the user's choice stands) and one worker (a
multi-worker cluster trains one candidate: every worker would have to run the same sequence of
runs; say `auto_tune=off` there to make that explicit). It says in one line why when it does not
tune. `"on"` refuses a config where it cannot tune (another method, no validation split, a given
`negative_focusing`, several workers) and, like "auto", trains once with complete labels, where
there is nothing to choose; `"off"` trains the loss as configured, once.
"""

import functools
import os
import shutil

from kpartial import workdir

# name -> loss options added to the run's; the first is the default and wins ties.
CANDIDATES = {"focused": "", "unfocused": "negative_focusing=0"}

FOLDER = "auto_tune"
# A candidate's artifacts that become the run's: all but how it was run and its training state
# (flags, config, checkpoints, logs stay in its folder; metrics.json is the tune's own).
CHOSEN_ARTIFACTS = tuple(
    name
    for name in workdir.ARTIFACTS
    if name
    not in ("flags.txt", "config.json", workdir.FINISHED, "checkpoint", "checkpoint.weights.h5")
    + ("tensorboard", FOLDER)
)


def config_error(config):
    """Why `auto_tune="on"` cannot tune the config (one line), else "" (also for auto and off)."""
    if config.loss.auto_tune != "on":
        return ""
    if not config.loss.has_techniques:
        return (
            f"auto_tune chooses kpartial's loss options; method={config.loss.method} has none to "
            "tune"
        )
    if not config.data.has_validation:
        return (
            "auto_tune chooses on the validation split: give validation_fraction > 0 or "
            "validation_data"
        )
    if "negative_focusing" in config.loss.parsed_options:
        return "auto_tune chooses negative_focusing: leave it out of loss_options, or auto_tune=off"
    return ""


def off_because(config, stats, placement):
    """Why `config` trains once (a line for the log), or "" when it tunes.

    Args:
      config: the run's `kpartial.config.Config`.
      stats: the training labels' `ClassStatistics`.
      placement: the run's `distribution.Placement`.

    Raises:
      ValueError: `auto_tune="on"` in a multi-worker run.
    """
    setting = config.loss.auto_tune
    if setting == "off":
        return "auto_tune=off"
    if not config.loss.has_techniques:
        return f"auto_tune: method={config.loss.method} has no focusing to choose"
    if setting == "auto":
        if not config.data.has_validation:
            return "auto_tune: no validation split to choose on (validation_fraction=0)"
        if "negative_focusing" in config.loss.parsed_options:
            return "auto_tune: loss_options gives negative_focusing, which stands"
    if placement.place.count > 1:
        if setting == "on":
            raise ValueError(
                "auto_tune=on trains its candidates one after another on one worker; a "
                "multi-worker run cannot, give auto_tune=off"
            )
        return "auto_tune: a multi-worker run trains one candidate (the default loss)"
    if stats.complete:
        return "auto_tune: every training entry is annotated, nothing to choose (gamma 4)"
    return ""


def plan(config, stats, placement, log):
    """(the config the run records, the candidates' configs or () when it trains once).

    A kpartial run that could tune but trains once records `auto_tune="off"` in its config.json,
    the setting it ran with, and says why in one line; other methods and `auto_tune=off` keep
    their config as given.
    """
    reason = off_because(config, stats, placement)
    if not reason:
        return config, tuple(candidate_config(config, name) for name in CANDIDATES)
    if config.loss.has_techniques and config.loss.auto_tune != "off":
        log(f"{reason}; training once")
        config = config.replace(auto_tune="off")
    return config, ()


def validation_score(result):
    """The candidate's validation mAP at its selected epoch.

    At its last evaluation if that epoch was not evaluated; NaN if no epoch was.
    """
    scored = [e for e in result["history"] if e.get("val_map") is not None]
    if not scored:
        return float("nan")
    selected = result["selection"]["selected_epoch"]
    at_selected = [e for e in scored if e["epoch"] == selected]
    return (at_selected or scored)[-1]["val_map"]


def candidate_config(config, name):
    """The config of candidate `name`: its loss options added to the run's, its own folder."""
    options = ",".join(filter(None, (config.loss.options, CANDIDATES[name])))
    folder = os.path.join(config.workdir, FOLDER, name) if config.workdir else ""
    return config.replace(auto_tune="off", loss_options=options, workdir=folder)


def choose(scores):
    """The candidate with the highest score; the first (the default) unless another is higher."""
    return max(scores, key=scores.get)  # max keeps the first of equal scores


def tune(config, run_candidate, log):
    """Trains every candidate and keeps the one with the higher validation mAP.

    With a workdir, the chosen one's artifacts become the run's and `metrics.json` is written last.

    Args:
      config: the run's `kpartial.config.Config`.
      run_candidate: trains one candidate: `run_candidate(candidate_config, log)` returns its
        metrics (with `history` and `selection`).
      log: prints one line.

    Returns:
      The chosen candidate's metrics, with `train_seconds` of both and an `auto_tune` section.
    """
    results, scores = {}, {}
    log(
        f"auto_tune: {len(CANDIDATES)} runs, one per candidate ({', '.join(CANDIDATES)}), the "
        "better on validation kept; --auto_tune=off trains once"
    )
    for name in CANDIDATES:
        candidate = candidate_config(config, name)
        log(f"auto_tune: training candidate {name} (loss_options={candidate.loss.options or '-'})")
        results[name] = run_candidate(candidate, lambda line, name=name: log(f"[{name}] {line}"))
        scores[name] = validation_score(results[name])
    chosen = choose(scores)
    log(
        "auto_tune: chose "
        + chosen
        + " on validation mAP ("
        + ", ".join(f"{name} {score:.4f}" for name, score in scores.items())
        + "); the test set was not used for the choice"
    )
    result = dict(results[chosen])
    # The run's cost is both candidates' (each candidate's own time is in the section).
    result["train_seconds"] = round(sum(r.get("train_seconds") or 0.0 for r in results.values()), 3)
    result["auto_tune"] = {
        "chosen": chosen,
        "candidates": {
            name: {
                "loss_options": candidate_config(config, name).loss.options,
                "val_map": scores[name],
                "selected_epoch": results[name]["selection"]["selected_epoch"],
                "train_seconds": results[name].get("train_seconds"),
            }
            for name in CANDIDATES
        },
        "note": "chosen by validation mAP at each candidate's selected epoch; test metrics are "
        "those of the chosen candidate only",
    }
    if config.workdir:
        source = os.path.join(config.workdir, FOLDER, chosen)
        for name in CHOSEN_ARTIFACTS:
            if os.path.isfile(os.path.join(source, name)):
                copy = functools.partial(shutil.copyfile, os.path.join(source, name))
                workdir.replace_atomically(os.path.join(config.workdir, name), copy)
        workdir.write_json(os.path.join(config.workdir, workdir.FINISHED), result)
    log(
        f"{config.loss.method} (auto_tune: {chosen}): mAP={result['map']:.4f} "
        f"CF1={result['cf1']:.4f} OF1={result['of1']:.4f} on the test set"
        + (f"; artifacts in {config.workdir}" if config.workdir else "")
    )
    return result
