"""Runs several methods on identical simulated labels and tabulates mAP (mean ± std over seeds)."""

import os

import numpy as np
import pandas as pd

from kpartial import run_inputs, training

# kpartial and the two baselines it is compared with, as flat config overrides.
BASELINE_VARIANTS = {
    "kpartial": {},
    "ignore": {"method": "ignore"},
    "assume_negative": {"method": "assume_negative"},
}


def compare(
    base_config,
    variants,
    known_fractions,
    seeds,
    workdir_root="",
    log=print,
    resume=False,
    overwrite=False,
):
    """Trains every variant x known fraction x seed; returns a DataFrame of results.

    Args:
      base_config: the `kpartial.config.Config` shared by all runs.
      variants: dict name -> dict of flat config overrides (e.g. {"ignore": {"method": "ignore"}}).
      known_fractions: fractions of training labels kept; the simulation depends only on the
        fraction and seed, so every variant sees identical labels.
      seeds: seeds to repeat each setting with.
      workdir_root: if set, each run writes into `workdir_root/<variant>/kf<fraction>_s<seed>`.
      log: function printing a line.
      resume, overwrite: as `training.run`, for each run's workdir (a resumed comparison skips the
        runs that finished).
    """
    rows = []
    loaded = {}  # data-field values -> (train, test): read, featurise and verify the data once
    for fraction in known_fractions:
        for name, overrides in variants.items():
            for seed in seeds:
                workdir = (
                    os.path.join(workdir_root, name, f"kf{fraction}_s{seed}")
                    if workdir_root
                    else ""
                )
                config = base_config.replace(
                    known_fraction=fraction, seed=seed, workdir=workdir, **overrides
                )
                key = tuple(getattr(config.data, field) for field in run_inputs.DATA_FIELDS)
                if key not in loaded:
                    loaded[key] = run_inputs.load_data(config)
                result = training.run(
                    config, log=log, datasets=loaded[key], resume=resume, overwrite=overwrite
                )
                rows.append(
                    {
                        "variant": name,
                        "method": config.loss.method,
                        "known_fraction": fraction,
                        "seed": seed,
                        "map": result["map"],
                        "cf1": result["cf1"],
                        "of1": result["of1"],
                        "train_seconds": result["train_seconds"],
                    }
                )
    return pd.DataFrame(rows)


def summary_table(results, metric="map"):
    """Markdown table: variants as rows, known fractions as columns, `mean ± std` in percent."""
    grouped = results.groupby(["variant", "known_fraction"], sort=False)[metric]
    cells = grouped.agg(lambda v: f"{100 * np.mean(v):.2f} ± {100 * np.std(v):.2f}").unstack()
    order = list(dict.fromkeys(results["variant"]))
    cells = cells.loc[order].fillna("")  # a variant run at only some fractions
    header = "| variant | " + " | ".join(f"known {c}" for c in cells.columns) + " |"
    lines = [header, "|" + "---|" * (len(cells.columns) + 1)]
    lines += [f"| {name} | " + " | ".join(row) + " |" for name, row in cells.iterrows()]
    return "\n".join(lines)


def plot_metric_by_known_fraction(results, path, metric="map", title=""):
    """PNG of mean `metric` (± std over seeds) against known fraction, one line per variant.

    Draws on its own `Figure`: no pyplot state, no change of matplotlib's backend.
    """
    import matplotlib
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=100)
    axes = figure.subplots()
    axes.set_prop_cycle(color=matplotlib.colormaps["tab20"].colors)  # 20 distinct colours
    for name, rows in results.groupby("variant", sort=False):
        stats = rows.groupby("known_fraction")[metric].agg(["mean", "std"]).fillna(0.0)
        axes.errorbar(
            stats.index,
            100 * stats["mean"],
            yerr=100 * stats["std"],
            marker="o",
            capsize=3,
            label=name,
        )
    axes.set_xscale("log")
    axes.set_xlabel("known fraction of training labels")
    axes.set_ylabel(f"test {metric} (%), annotated entries only")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path)
