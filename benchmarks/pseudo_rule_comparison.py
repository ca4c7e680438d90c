r"""The pseudo-label store against the dense snapshot it replaced, on the Mulan sets.

Runs `tools/compare.py --methods=kpartial` (flags/mlp.cfg: pseudo labels from epoch 10, every 5,
prior mode) at known 0.1 and 0.3 with seeds 1,2,3, once with this checkout's code ("store") and
once with another checkout's ("snapshot", e.g. main before issue 10:
`git worktree add /tmp/old <commit>`), and writes benchmarks/results/pseudo_rule_comparison.md:
test mAP mean ± std per dataset, rule and known fraction, and whether store is within one std.

  .venv/bin/python benchmarks/pseudo_rule_comparison.py --old_root=/tmp/old yeast enron

Runs whose results.csv exists are not repeated (delete benchmarks/results/pseudo_rule/ to redo).
"""

import argparse
import os
import subprocess
import sys

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MULAN = os.environ.get("MULAN", os.path.join(ROOT, "..", "shared", "data", "mulan"))
SETS = {
    "yeast": ("yeast/yeast-train.arff", "yeast/yeast-test.arff"),
    "enron": ("enron/enron-train.arff", "enron/enron-test.arff"),
    "corel5k": ("corel5k/Corel5k-train-sparse.arff", "corel5k/Corel5k-test-sparse.arff"),
    "bibtex": ("bibtex/bibtex-train.arff", "bibtex/bibtex-test.arff"),
}
OUT = os.path.join(ROOT, "benchmarks", "results")


def run_compare(code_root, name, out):
    """tools/compare.py of `code_root` (its own kpartial first on sys.path) on one Mulan set."""
    if os.path.isfile(os.path.join(out, "results.csv")):
        return
    train, test = (os.path.abspath(os.path.join(MULAN, path)) for path in SETS[name])
    command = [
        sys.executable,
        os.path.join(code_root, "tools", "compare.py"),
        f"--flagfile={os.path.join(code_root, 'flags', 'mlp.cfg')}",
        f"--train_data=mulan:{train}",
        f"--test_data=mulan:{test}",
        "--methods=kpartial",
        "--known_fractions=0.1,0.3",
        "--seeds=1,2,3",
        "--eval_every=40",
        "--verbose=0",
        f"--out={out}",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run(command, cwd=code_root, env=env, check=True)


def summary(rows):
    """Markdown: one row per (dataset, known fraction), snapshot vs store mAP (%)."""
    header = "| dataset | known | snapshot (before) | store (this rule) | store - snapshot |"
    lines = [header + " within 1 std |", "|---|---|---|---|---|---|"]
    for (name, known), group in rows.groupby(["dataset", "known_fraction"], sort=False):
        stats = {
            rule: group[group.rule == rule]["map"].agg(["mean", "std"]) * 100
            for rule in ("snapshot", "store")
        }
        old, new = stats["snapshot"], stats["store"]
        diff = new["mean"] - old["mean"]
        ok = diff >= -max(old["std"], new["std"])
        lines.append(
            f"| {name} | {known} | {old['mean']:.2f} ± {old['std']:.2f} | "
            f"{new['mean']:.2f} ± {new['std']:.2f} | {diff:+.2f} | {'yes' if ok else 'NO'} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("datasets", nargs="*", default=list(SETS), choices=list(SETS))
    parser.add_argument("--old_root", required=True, help="checkout of the snapshot rule's code")
    args = parser.parse_args()
    frames = []
    for name in args.datasets:
        for rule, root in (("snapshot", args.old_root), ("store", ROOT)):
            out = os.path.join(OUT, "pseudo_rule", f"{name}_{rule}")
            run_compare(root, name, out)
            frame = pd.read_csv(os.path.join(out, "results.csv"))
            frames.append(frame.assign(dataset=name, rule=rule))
    rows = pd.concat(frames)
    text = (
        "Test mAP (%) of `--method=kpartial` (flags/mlp.cfg, 40 epochs, pseudo labels from epoch "
        "10 every 5, prior mode), mean ± std over seeds 1,2,3; annotated test entries only. "
        "snapshot: pseudo labels predicted into a dense [N, C] table at each refresh (before); "
        "store: [C] thresholds from one streaming histogram pass, each example's pseudo positives "
        "stored (at most 16), pseudo negatives applied online in the train step.\n"
        f"Written by `benchmarks/pseudo_rule_comparison.py {' '.join(args.datasets)}`.\n\n"
        f"{summary(rows)}\n"
    )
    with open(os.path.join(OUT, "pseudo_rule_comparison.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
