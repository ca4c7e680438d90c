r"""Compares methods x known fractions x seeds on identical simulated labels.

  python tools/compare.py --flagfile=flags/mlp.cfg \
      --train_data=mulan:../shared/data/mulan/yeast/yeast-train.arff \
      --test_data=mulan:../shared/data/mulan/yeast/yeast-test.arff \
      --methods=kpartial,ignore,asl --known_fractions=0.1,0.3 --seeds=1,2,3 --out=workdirs/cmp

`--methods=all` runs every method of `kpartial.losses.LOSSES`. For a given known fraction and
seed every method trains on the same simulated labels (the simulation depends only on those two).
Writes into --out: results.csv (one row per run), results.md (mean ± std over seeds) and
map_by_known_fraction.png. The other training flags (--epochs, --pseudo_*, ...) are those of
tools/train.py and apply to every run.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # before TensorFlow is imported
import train  # tools/train.py: its flags and their mapping to the config
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", ["kpartial", "ignore", "assume_negative"], "Methods, or 'all'.")
flags.DEFINE_list("known_fractions", ["0.1", "0.3"], "Known fractions of training labels.")
flags.DEFINE_list("seeds", ["1", "2", "3"], "Seeds.")
flags.DEFINE_string("out", None, "Output folder.")
flags.DEFINE_bool("keep_runs", False, "Keep each run's workdir under --out/runs.")
flags.mark_flag_as_required("out")
FLAGS.set_default("workdir", "")  # runs write under --out (with --keep_runs), not one workdir


def _check_methods(methods):
    known = train.train_flags.config_lib.METHODS
    unknown = [m for m in methods if m != "all" and m not in known]
    if unknown:
        raise flags.ValidationError(f"unknown {unknown}; known: all, {', '.join(known)}")
    return True


def _check_fractions(values):
    try:
        return all(0 < float(v) <= 1 for v in values)
    except ValueError:
        return False


flags.register_validator("methods", _check_methods)
flags.register_validator("known_fractions", _check_fractions, "must be numbers in (0, 1]")
flags.register_validator(
    "seeds", lambda v: all(s.lstrip("-").isdigit() for v_ in [v] for s in v_), "must be integers"
)


def _variant(method):
    """flat config overrides of a method: --loss_options are options of --method's loss, so the
    other methods run with their losses' defaults (--method itself plays no other part)."""
    return {"method": method, "loss_options": FLAGS.loss_options if method == FLAGS.method else ""}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.start_tensorflow()
    from kpartial import comparison

    if FLAGS.strategy == "multi_worker":
        raise app.UsageError(
            "--strategy=multi_worker trains one run on a cluster: use tools/train.py (compare's "
            "runs can use the GPUs of one machine with --strategy=mirrored)"
        )
    methods = (
        list(train.train_flags.config_lib.METHODS) if "all" in FLAGS.methods else FLAGS.methods
    )
    with cli.one_line_errors():
        os.makedirs(FLAGS.out, exist_ok=True)
        base = train.config_from_flags(**_variant(methods[0]))
        results = comparison.compare(
            base,
            {m: _variant(m) for m in methods},
            [float(f) for f in FLAGS.known_fractions],
            [int(s) for s in FLAGS.seeds],
            os.path.join(FLAGS.out, "runs") if FLAGS.keep_runs else "",
            resume=FLAGS.resume,
            overwrite=FLAGS.overwrite,
        )
    results.to_csv(os.path.join(FLAGS.out, "results.csv"), index=False)
    table = comparison.summary_table(results)
    with open(os.path.join(FLAGS.out, "results.md"), "w") as f:
        f.write(
            f"Test mAP (%), mean ± std over seeds {','.join(FLAGS.seeds)}; annotated test "
            f"entries only.\n\n{table}\n"
        )
    comparison.plot_metric_by_known_fraction(
        results, os.path.join(FLAGS.out, "map_by_known_fraction.png"), title=FLAGS.train_data
    )
    print(table)
    print(f"wrote {FLAGS.out}/results.csv, results.md, map_by_known_fraction.png")


if __name__ == "__main__":
    cli.run_with_grouped_help(main, [sys.argv[0], *train.GROUPS])
