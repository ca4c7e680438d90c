"""Labels missing for a reason: every method under verified candidates and per-class coverage.

For each Mulan set (fully labelled), each regime and seed, the training labels are simulated
with `kpartial.simulate` (`vcK`: verified_candidates with K candidates and detector AUC 0.9;
`ccA-B`: class_coverage with shares in [A, B]), saved, and every method trains on the same file
with `flags/mlp.cfg`'s settings and the package defaults otherwise. Test mAP is reported on the
full truth (`map`: every test entry) and on the entries the same scheme would have verified
(`simulated_test_map`). Writes a JSON of every run and a markdown table.

  python benchmarks/missing_for_a_reason.py --datasets=yeast,enron --regimes=vc4,cc0.02-0.8 \
      --methods=kpartial,ignore --seeds=1 --out=/tmp/reason
"""

import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.environ.get("PYTHONPATH") or os.path.dirname(os.path.dirname(__file__)))

import tables
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["yeast", "enron"], "Mulan sets under --mulan_root.")
flags.DEFINE_string("mulan_root", "../shared/data/mulan", "Folder of the Mulan sets.")
flags.DEFINE_list("regimes", ["vc4", "vc8", "cc0.02-0.8", "cc0.1-0.5"], "vcK or ccA-B.")
flags.DEFINE_list(
    "methods",
    ["kpartial", "ignore", "p_asl", "epr"],
    "Methods, or variants METHOD:FIELD=VALUE;FIELD=VALUE (flat config fields), e.g. "
    "kpartial:missing_labels=at_random.",
)
flags.DEFINE_list("seeds", ["1"], "Seeds (of the simulation and of the run).")
flags.DEFINE_integer("epochs", 40, "Epochs per run.")
flags.DEFINE_string("out", "/tmp/missing_for_a_reason", "Output folder (runs.json, table.md).")


def scheme(regime):
    """(scheme, params) of a regime name."""
    if regime.startswith("vc"):
        return "verified_candidates", {"candidates": float(regime[2:]), "detector_auc": 0.9}
    low, high = regime[2:].split("-")
    return "class_coverage", {"min_fraction": float(low), "max_fraction": float(high)}


def main(argv):
    del argv
    from kpartial import config, run_inputs, simulate, training

    os.makedirs(FLAGS.out, exist_ok=True)
    runs = []
    for dataset in FLAGS.datasets:
        train_file, test_file = (
            os.path.join(FLAGS.mulan_root, f) for f in tables.MULAN_FILES[dataset]
        )
        base = config.Config.from_flat(
            train_data=f"mulan:{train_file}",
            test_data=f"mulan:{test_file}",
            epochs=FLAGS.epochs,
            pseudo_start_epoch=0.25,
            prune_schedule="0.75:0.25",
            eval_every=5,
        )
        loaded = run_inputs.load_data(base)
        train = loaded[0]
        for regime in FLAGS.regimes:
            name, params = scheme(regime)
            for seed in map(int, FLAGS.seeds):
                labels = simulate.simulate(train.labels, name, seed, **params)
                path = os.path.join(tempfile.mkdtemp(), "simulation.npz")
                simulate.save(
                    path,
                    labels,
                    scheme=name,
                    seed=seed,
                    params=params,
                    source=train.source,
                    label_names=train.label_names,
                )
                left = simulate.describe(train.labels, labels)
                for method in FLAGS.methods:
                    name_, overrides = tables.method_variant(method)
                    run = base.replace(method=name_, simulation=path, seed=seed, **overrides)
                    lines = []
                    started = time.perf_counter()
                    result = training.run(run, log=lines.append, datasets=loaded)
                    seconds = time.perf_counter() - started
                    runs.append(
                        {
                            "dataset": dataset,
                            "regime": regime,
                            "seed": seed,
                            "method": method,
                            "map": result["map"],
                            "simulated_test_map": result.get("simulated_test_map"),
                            "seconds": seconds,
                            "left": left,
                            "decisions": [
                                line
                                for line in lines
                                if any(
                                    key in line
                                    for key in (
                                        "pseudo labels: off",
                                        "class statistics",
                                        "chose",
                                        "rate measured",
                                        "labels tested",
                                        "not tested",
                                    )
                                )
                            ],
                        }
                    )
                    print(
                        dataset,
                        regime,
                        seed,
                        method,
                        f"map={result['map']:.4f}",
                        f"simulated_test_map={result.get('simulated_test_map', float('nan')):.4f}",
                        f"{seconds:.0f}s",
                        flush=True,
                    )
                    with open(os.path.join(FLAGS.out, "runs.json"), "w") as f:
                        json.dump(runs, f, indent=1)
    _write_table(runs)


def _write_table(runs):
    methods = list(dict.fromkeys(r["method"] for r in runs))
    lines = [
        (
            "Test mAP (%) on the full truth, then on the entries the scheme would have verified; "
            f"mean over seeds {','.join(FLAGS.seeds)}."
        ),
        "",
        "| set | regime | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    cells = {}
    for r in runs:
        cells.setdefault((r["dataset"], r["regime"]), {}).setdefault(r["method"], []).append(r)
    for (dataset, regime), by_method in cells.items():
        row = []
        for method in methods:
            rs = by_method.get(method, [])
            full = statistics.mean(r["map"] for r in rs) * 100 if rs else float("nan")
            seen = (
                statistics.mean(r["simulated_test_map"] for r in rs) * 100 if rs else float("nan")
            )
            row.append(f"{full:.2f} ({seen:.2f})")
        lines.append(f"| {dataset} | {regime} | " + " | ".join(row) + " |")
    tables.write_table(os.path.join(FLAGS.out, "table.md"), lines)
    print("\n".join(lines))


if __name__ == "__main__":
    app.run(main)
