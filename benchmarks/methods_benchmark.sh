#!/usr/bin/env bash
# Every method on Mulan sets at known fractions 0.1/0.3/0.5/1.0, 3 seeds, the defaults of this
# version (validation part 0.1, best-val_map epoch; benchmarks/kpartial_ablation.py's settings),
# then the tables (benchmarks/methods_table.py); results under benchmarks/results/methods/.
#   bash benchmarks/methods_benchmark.sh yeast enron bibtex corel5k
set -euo pipefail
cd "$(dirname "$0")/.."
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(yeast enron bibtex corel5k)
out=benchmarks/results/methods
mkdir -p "$out"
variants=(--variants=kpartial=)
for method in ignore assume_negative wan an_ls epr focal asl p_asl hill splc ll_r ll_ct ll_cp; do
  variants+=("--variants=$method=method:$method;loss_options:")
done
results=()
for name in "${names[@]}"; do
  .venv/bin/python benchmarks/kpartial_ablation.py --datasets="$name" \
      --fractions=0.1,0.3,0.5,1.0 --seeds=1,2,3 "${variants[@]}" --out="$out/$name.json"
  results+=("$out/$name.json")
done
.venv/bin/python benchmarks/methods_table.py --results="$(IFS=,; echo "${results[*]}")" \
    --out="$out/tables.md"
