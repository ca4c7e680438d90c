"""What a validation-chosen kpartial variant would score: a table from `kpartial_ablation.py` runs.

For every (set, known fraction, seed) each grid keeps the variant with the highest `val_map` (the
first of the grid on a tie: `kpartial.auto_tune.choose`), and the cell is the mean test mAP of
the kept runs over the seeds. The test mAP of a variant never enters the choice.

  python benchmarks/auto_tune_table.py --inputs=benchmarks/results/auto_tune/mulan_focusing.json \
      --grids=g2,g0 --grids=g2,g0,g4,b0g4
"""

import json
import os
import statistics
import sys

sys.path.insert(0, os.environ.get("PYTHONPATH") or os.path.dirname(os.path.dirname(__file__)))

from absl import app, flags

from kpartial import auto_tune

FLAGS = flags.FLAGS
flags.DEFINE_list("inputs", None, "JSON files of benchmarks/kpartial_ablation.py.", required=True)
flags.DEFINE_multi_string("grids", ["g2,g0"], "Variant names; the first wins ties.")


def choose(runs, grid):
    return auto_tune.choose({name: runs[name]["val_map"] for name in grid})


def main(argv):
    del argv
    cells = {}
    for path in FLAGS.inputs:
        with open(path) as f:
            for run in json.load(f)["runs"]:
                key = (run["dataset"], run["fraction"])
                cells.setdefault(key, {}).setdefault(run["seed"], {})[run["variant"]] = run
    grids = [grid.split(",") for grid in FLAGS.grids]
    variants = sorted({name for seeds in cells.values() for s in seeds.values() for name in s})
    header = ["set", "known", *variants, *(f"chosen from {'/'.join(g)}" for g in grids)]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (dataset, fraction), seeds in sorted(cells.items()):
        row = [dataset, f"{fraction:g}"]
        for name in variants:
            maps = [s[name]["map"] for s in seeds.values() if name in s]
            row.append(f"{100 * statistics.mean(maps):.2f}" if maps else "")
        for grid in grids:
            kept = [choose(s, grid) for s in seeds.values()]
            score = statistics.mean(s[k]["map"] for s, k in zip(seeds.values(), kept))
            row.append(f"{100 * score:.2f} ({','.join(kept)})")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    app.run(main)
