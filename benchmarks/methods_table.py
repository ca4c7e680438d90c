"""Tables of every method from `kpartial_ablation.py` results: per set, and against kpartial.

Reads the runs of one or more `--out` JSON files of `benchmarks/kpartial_ablation.py` (a variant
named after its method, e.g. `--variants='p_asl=method:p_asl;loss_options:'`), averages the
seeds (a file's "means" give the cells it has no runs for, marked with *: e.g. cells carried over
from an earlier run of the same code and settings) and writes markdown: one table per set (methods x known fractions, mean ± std) and one row
per set and fraction with kpartial, ignore, the best other method and the two differences.

  python benchmarks/methods_table.py --results=a.json,b.json --out=benchmarks/results/methods.md
"""

import collections
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))

import tables
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("results", [], "kpartial_ablation.py JSON files.")
flags.DEFINE_string("out", "benchmarks/results/methods.md", "Markdown file to write.")


def mean_maps(paths):
    """{(dataset, fraction): {variant: (mean %, std %, seeds or "*")}} over `paths`."""
    maps, carried = collections.defaultdict(list), {}
    for path in paths:
        with open(path) as f:
            results = json.load(f)
        for run in results["runs"]:
            maps[run["dataset"], run["fraction"], run["variant"]].append(run["map"] * 100)
        for key, (mean, std) in results["means"].items():
            dataset, fraction, variant = key.split(" ", 2)
            carried[dataset, float(fraction), variant] = (mean * 100, std * 100, "*")
    table = collections.defaultdict(dict)
    for key, value in carried.items():
        if key not in maps:
            table[key[:2]][key[2]] = value
    for (dataset, fraction, variant), values in maps.items():
        table[dataset, fraction][variant] = (
            statistics.mean(values),
            statistics.pstdev(values),
            len(values),
        )
    return table


def lines_for(table):
    cell = lambda v: f"{v[0]:.2f} ± {v[1]:.2f}" + ("*" if v[2] == "*" else "")
    order = list(tables.MULAN_FILES)  # the usual order; other sets after them
    datasets = sorted({d for d, _ in table}, key=lambda d: (order + [d]).index(d))
    lines = []
    for dataset in datasets:
        fractions = sorted(f for d, f in table if d == dataset)
        methods = list(dict.fromkeys(m for f in fractions for m in table[dataset, f]))
        methods.sort(key=lambda m: (m != "kpartial", m != "ignore"))
        lines += [
            f"#### {dataset}",
            "",
            "| method | " + " | ".join(f"known {f}" for f in fractions),
        ]
        lines[-1] += " |"
        lines.append("|---|" + "---|" * len(fractions))
        for method in methods:
            row = [
                cell(table[dataset, f][method]) if method in table[dataset, f] else "-"
                for f in fractions
            ]
            lines.append(f"| {method} | " + " | ".join(row) + " |")
        lines.append("")
    header = "| set | known | kpartial | ignore | best other | kpartial - best other |"
    lines += [header + " kpartial - ignore |", "|---|---|---|---|---|---|---|"]
    for dataset, fraction in sorted(table, key=lambda k: (datasets.index(k[0]), k[1])):
        row = table[dataset, fraction]
        others = {m: v for m, v in row.items() if m != "kpartial"}
        if "kpartial" not in row or not others:
            continue
        best = max(others, key=lambda m: others[m][0])
        kpartial = row["kpartial"][0]
        ignore = row.get("ignore", (float("nan"),))[0]
        lines.append(
            f"| {dataset} | {fraction} | {cell(row['kpartial'])} | "
            f"{cell(row['ignore']) if 'ignore' in row else '-'} | {best} {others[best][0]:.2f} | "
            f"{kpartial - others[best][0]:+.2f} | {kpartial - ignore:+.2f} |"
        )
    seeds = sorted({v[2] for row in table.values() for v in row.values() if v[2] != "*"})
    note = "test entries only; * = carried over from an earlier run (see the results files)."
    lines += ["", f"Seeds per cell: {', '.join(map(str, seeds))}; test mAP (%), annotated " + note]
    return lines


def main(argv):
    del argv
    tables.write_table(FLAGS.out, lines_for(mean_maps(FLAGS.results)))


if __name__ == "__main__":
    app.run(main)
