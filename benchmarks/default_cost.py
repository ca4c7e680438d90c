"""What the default kpartial run costs against `--method=ignore`, side by side in one process.

For each set: one discarded warm-up run (TensorFlow's first graphs and kernels), then for each
seed a default run and an `ignore` run, alternating which goes first, with `flags/mlp.cfg`'s
settings at 10% known labels (Tox21: its measured labels thinned the same way). The ratio is the
sum of the default runs' wall times over the sum of the `ignore` runs' (`training.run`, data
already loaded). Writes a JSON of every run and a markdown table.

  python benchmarks/default_cost.py --datasets=yeast,enron --seeds=1,2 --out=/tmp/cost
"""

import json
import os
import sys
import time

sys.path.insert(0, os.environ.get("PYTHONPATH") or os.path.dirname(os.path.dirname(__file__)))

import tables
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["yeast", "enron", "bibtex", "corel5k", "tox21"], "Sets.")
flags.DEFINE_string("mulan_root", "../shared/data/mulan", "Folder of the Mulan sets.")
flags.DEFINE_string("tox21", "../shared/data/moleculenet/tox21.csv", 'The "tox21" CSV.')
flags.DEFINE_list("seeds", ["1", "2"], "Seeds.")
flags.DEFINE_float("known_fraction", 0.1, "Known fraction.")
flags.DEFINE_string("out", "/tmp/default_cost", "Output folder (runs.json, table.md).")
flags.DEFINE_list(
    "set",
    [],
    "FIELD=VALUE flat config fields set in both runs, values as written (string fields: "
    "switches, choices, options), e.g. jit_compile=true or pseudo_labels=off.",
)


def _data_fields(dataset):
    if dataset == "tox21":
        return {"train_data": f"moleculenet:{FLAGS.tox21}", "test_fraction": 0.2}
    train_file, test_file = (os.path.join(FLAGS.mulan_root, f) for f in tables.MULAN_FILES[dataset])
    return {"train_data": f"mulan:{train_file}", "test_data": f"mulan:{test_file}"}


def main(argv):
    del argv
    from kpartial import run_inputs, training
    from kpartial.config import Config

    os.makedirs(FLAGS.out, exist_ok=True)
    preset = {  # flags/mlp.cfg
        "hidden_units": (512,),
        "dropout": 0.2,
        "batch_size": 256,
        "epochs": 40,
        "pseudo_start_epoch": 0.25,
        "pseudo_every": 5,
        "pseudo_weight": 0.5,
        "prune_schedule": "0.75:0.25",
        "on_bad_input": "skip",
    }
    runs, lines = [], ["| set | default s | ignore s | default / ignore |", "|---|---|---|---|"]
    for dataset in FLAGS.datasets:
        base = Config.from_flat(
            **_data_fields(dataset),
            **preset,
            **dict(setting.split("=", 1) for setting in FLAGS.set),
            known_fraction=FLAGS.known_fraction,
        )
        loaded = run_inputs.load_data(base)
        methods = {"default": base, "ignore": base.replace(method="ignore")}
        training.run(base, log=lambda line: None, datasets=loaded)  # warm-up, discarded
        seconds = {name: 0.0 for name in methods}
        for turn, seed in enumerate(map(int, FLAGS.seeds)):
            order = list(methods) if turn % 2 == 0 else list(reversed(methods))
            for name in order:
                log = []
                started = time.perf_counter()
                result = training.run(
                    methods[name].replace(seed=seed), log=log.append, datasets=loaded
                )
                took = time.perf_counter() - started
                seconds[name] += took
                tested = [line for line in log if "labels tested" in line or "not tested" in line]
                runs.append(
                    {"dataset": dataset, "method": name, "seed": seed, "seconds": took,
                     "map": result["map"], "decisions": tested}
                )  # fmt: skip
                print(
                    dataset,
                    name,
                    seed,
                    f"{took:.1f}s",
                    f"map={result['map']:.4f}",
                    *tested,
                    flush=True,
                )
        ratio = seconds["default"] / seconds["ignore"]
        lines.append(
            f"| {dataset} | {seconds['default']:.1f} | {seconds['ignore']:.1f} | {ratio:.2f}x |"
        )
        with open(os.path.join(FLAGS.out, "runs.json"), "w") as f:
            json.dump(runs, f, indent=1)
    tables.write_table(os.path.join(FLAGS.out, "table.md"), lines)


if __name__ == "__main__":
    app.run(main)
