r"""Writes a seeded partial-label simulation of a dataset, for training on identical labels.

  python tools/simulate.py --data=mulan:../shared/data/mulan/yeast/yeast-train.arff \
      --scheme=per_image_count --positives=1 --negatives=0 --seed=1 --out=sims/yeast_single.npz
  python tools/train.py --train_data=... --test_data=... --simulation=sims/yeast_single.npz ...

Schemes (kpartial/simulate.py): keep_fraction (--fraction), per_image_fraction (--fraction),
per_class_count (--count positives and --count negatives per class), per_image_count
(--positives, --negatives per image; 1 and 0 = single positive), and two where labels are
missing for a reason: verified_candidates (--candidates=K --detector_auc=A: each example
verifies the top ~K classes of a simulated detector, as Open Images' labels were made) and
class_coverage (--min_fraction --max_fraction: each class keeps its own share of the entries, as
assays screened on different libraries). It prints the share of the true positives left unknown
and the known share per class (10th/50th/90th percentile). --out defaults to a file next to
the data named after the scheme, its parameters and the seed. The .npz holds the kept labels
(sparse) and a JSON record of the scheme, parameters, seed, data and classes.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cli  # before TensorFlow is imported
from absl import app, flags

data = cli.import_without_tensorflow("data")  # the flags are parsed before TensorFlow starts
simulate = cli.import_without_tensorflow("simulate")

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "FMT:PATH of the fully (or natively partially) labelled data.")
flags.DEFINE_string("data_options", "", "Reader options key=value,...")
flags.DEFINE_enum("on_bad_input", "error", list(data.ON_BAD_INPUT), "Bad records: error or skip.")
flags.DEFINE_enum("scheme", "keep_fraction", list(simulate.SCHEMES), "Simulation scheme.")
flags.DEFINE_float("fraction", None, "keep_fraction / per_image_fraction: share kept, (0, 1].")
flags.DEFINE_integer("count", None, "per_class_count: positives and negatives kept per class.")
flags.DEFINE_integer("positives", None, "per_image_count: positives kept per image.")
flags.DEFINE_integer("negatives", None, "per_image_count: negatives kept per image.")
flags.DEFINE_float("candidates", None, "verified_candidates: mean classes verified per example.")
flags.DEFINE_float("detector_auc", None, "verified_candidates: the detector's mean ROC AUC.")
flags.DEFINE_float("min_fraction", None, "class_coverage: the lowest share a class keeps.")
flags.DEFINE_float("max_fraction", None, "class_coverage: the highest share a class keeps.")
flags.DEFINE_integer("seed", 1, "Seed.")
flags.DEFINE_string("out", "", "Output .npz; default next to the data.")
flags.mark_flag_as_required("data")


PARAMETERS = sorted({name for _, names in simulate.SCHEMES.values() for name in names})


def _check_scheme_parameters(values):
    needed = simulate.SCHEMES[values["scheme"]][1]
    missing = [f"--{n}" for n in needed if values[n] is None]
    unused = [f"--{n}" for n in PARAMETERS if n not in needed and values[n] is not None]
    if missing or unused:
        raise flags.ValidationError(
            f"--scheme={values['scheme']} needs {', '.join('--' + n for n in needed)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; does not take {unused}" if unused else "")
        )
    return True


flags.register_multi_flags_validator(["scheme", *PARAMETERS], _check_scheme_parameters)


def default_out(path, scheme, params, seed):
    stem = os.path.splitext(os.path.abspath(path))[0]
    tag = "-".join(f"{k}{v}" for k, v in params.items())
    return f"{stem}.{scheme}-{tag}-seed{seed}.simulation.npz"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.start_tensorflow()  # an image reader may import it
    with cli.one_line_errors():
        _, path = data.parse_data_spec(FLAGS.data)
        full = data.load_spec(FLAGS.data, FLAGS.data_options, FLAGS.on_bad_input)
    names = simulate.SCHEMES[FLAGS.scheme][1]
    params = {n: FLAGS[n].value for n in names}
    with cli.one_line_errors():
        labels = simulate.simulate(full.labels, FLAGS.scheme, FLAGS.seed, **params)
    out = FLAGS.out or default_out(path, FLAGS.scheme, params, FLAGS.seed)
    simulate.save(
        out,
        labels,
        scheme=FLAGS.scheme,
        seed=FLAGS.seed,
        params=params,
        source=full.source,
        label_names=full.label_names,
    )
    kept = labels.num_known if hasattr(labels, "num_known") else int((labels != 0).sum())
    for reason, count in full.skipped.items():
        print(f"skipped {count} records (on_bad_input=skip): {reason}")
    left = simulate.describe(full.labels, labels)
    p10, p50, p90 = left["class_known_share"]
    print(
        f"{FLAGS.scheme} {params} seed {FLAGS.seed}: kept {kept} of {full.num_known} known "
        f"labels of {full.source} ({left['known_share']:.1%} of the entries known); "
        f"{left['positives_unknown']:.1%} of the annotated positives left unknown; known share "
        f"per class p10/p50/p90 {p10:.3f}/{p50:.3f}/{p90:.3f}; wrote {out}"
    )


if __name__ == "__main__":
    app.run(main)
