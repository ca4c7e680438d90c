"""kpartial's loss and pseudo-label settings on Mulan sets: test mAP per variant, seeds averaged.

Every run uses `flags/mlp.cfg`'s settings (40 epochs, pseudo labels from epoch 10 every 5, a
quarter of the classes pruned after 75% of the epochs) with the validation split and best-epoch
selection of the defaults; a variant changes flat config fields (e.g. the loss options). Run it
from another checkout (`PYTHONPATH=that checkout`) to measure that version side by side with the
same script.

  python benchmarks/kpartial_ablation.py --datasets=yeast,bibtex --fractions=0.1,0.5 \
      --variants='lambda 0.1=loss_options:unknown_weight=0.1' --out=/tmp/ablation.json
"""

import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.environ.get("PYTHONPATH") or os.path.dirname(os.path.dirname(__file__)))

import tables
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("datasets", ["yeast", "bibtex"], 'Mulan sets under --mulan_root, or "tox21".')
flags.DEFINE_string("mulan_root", "../shared/data/mulan", "Folder of the Mulan sets.")
flags.DEFINE_string("tox21", "../shared/data/moleculenet/tox21.csv", 'The "tox21" dataset\'s CSV.')
flags.DEFINE_list("fractions", ["0.1"], "Known fractions.")
flags.DEFINE_list("seeds", ["1", "2"], "Seeds.")
flags.DEFINE_multi_string(
    "variants",
    ["default="],
    "NAME=FIELD:VALUE;FIELD:VALUE... (flat config fields; values parsed as JSON, else strings).",
)
flags.DEFINE_integer("epochs", 40, "Epochs per run.")
flags.DEFINE_string("out", "/tmp/kpartial_ablation.json", "JSON of every run and the means.")


def _variant(text):
    name, _, fields = text.partition("=")
    overrides = {}
    for item in filter(None, fields.split(";")):
        key, _, value = item.partition(":")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return name, overrides


def _data_fields(dataset):
    """Flat config data fields: a Mulan set (validation every 5 epochs), or "tox21" as
    `tools/compare.py --flagfile=flags/mlp.cfg` runs it (20% test split, validation every epoch)."""
    if dataset == "tox21":
        return {
            "train_data": f"moleculenet:{FLAGS.tox21}",
            "test_fraction": 0.2,
            "on_bad_input": "skip",
        }
    train_file, test_file = (os.path.join(FLAGS.mulan_root, f) for f in tables.MULAN_FILES[dataset])
    return {"train_data": f"mulan:{train_file}", "test_data": f"mulan:{test_file}", "eval_every": 5}


def main(argv):
    del argv
    from kpartial import run_inputs, training
    from kpartial.config import Config

    variants = dict(_variant(text) for text in FLAGS.variants)
    runs, means = [], {}
    for dataset in FLAGS.datasets:
        base = Config.from_flat(
            **_data_fields(dataset),
            epochs=FLAGS.epochs,
            hidden_units=(512,),
            loss_options="balance=0.5,unknown_weight=0.1",
            pseudo_start_epoch=10,
            pseudo_every=5,
            pseudo_negative_coverage=0.1,
            prune_schedule=((round(FLAGS.epochs * 0.75), 0.25),),
        )
        loaded = run_inputs.load_data(base)
        for fraction in map(float, FLAGS.fractions):
            for name, overrides in variants.items():
                maps = []
                for seed in map(int, FLAGS.seeds):
                    config = base.replace(known_fraction=fraction, seed=seed, **overrides)
                    started = time.perf_counter()
                    result = training.run(config, log=lambda line: None, datasets=loaded)
                    seconds = time.perf_counter() - started
                    maps.append(result["map"])
                    runs.append(
                        {
                            "dataset": dataset,
                            "fraction": fraction,
                            "variant": name,
                            "seed": seed,
                            "map": result["map"],
                            # what a validation-selected choice (--auto_tune) would see
                            "val_map": max(
                                (e["val_map"] for e in result["history"] if "val_map" in e),
                                default=None,
                            ),
                            "selected_epoch": result["selection"]["selected_epoch"],
                            "auto_tune": result.get("auto_tune"),
                            "seconds": seconds,
                        }
                    )
                    print(dataset, fraction, name, seed, f"{result['map']:.4f}", f"{seconds:.0f}s")
                key = f"{dataset} {fraction} {name}"
                means[key] = (statistics.mean(maps), statistics.pstdev(maps))
                print("MEAN", key, f"{means[key][0] * 100:.2f} ± {means[key][1] * 100:.2f}")
                with open(FLAGS.out, "w") as f:
                    json.dump({"runs": runs, "means": means}, f, indent=1)


if __name__ == "__main__":
    app.run(main)
