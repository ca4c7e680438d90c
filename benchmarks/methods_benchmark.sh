#!/usr/bin/env bash
# Every method (tools/compare.py --methods=all) on Mulan sets at known fractions 0.1/0.3/0.5/1.0,
# 3 seeds, 40 epochs; results under benchmarks/results/methods_<dataset>/.
#   bash benchmarks/methods_benchmark.sh yeast enron bibtex corel5k
set -euo pipefail
cd "$(dirname "$0")/.."
MULAN=${MULAN:-../shared/data/mulan}
declare -A TRAIN=([yeast]=yeast/yeast-train.arff [enron]=enron/enron-train.arff
                  [bibtex]=bibtex/bibtex-train.arff [corel5k]=corel5k/Corel5k-train-sparse.arff)
declare -A TEST=([yeast]=yeast/yeast-test.arff [enron]=enron/enron-test.arff
                 [bibtex]=bibtex/bibtex-test.arff [corel5k]=corel5k/Corel5k-test-sparse.arff)
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(yeast enron bibtex corel5k)
for name in "${names[@]}"; do
  .venv/bin/python tools/compare.py --flagfile=flags/mlp.cfg \
      --train_data="mulan:$MULAN/${TRAIN[$name]}" --test_data="mulan:$MULAN/${TEST[$name]}" \
      --methods=all --known_fractions=0.1,0.3,0.5,1.0 --seeds=1,2,3 --epochs=40 \
      --eval_every=40 --verbose=0 --out="benchmarks/results/methods_$name"
done
