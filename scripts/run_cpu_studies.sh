#!/usr/bin/env bash
# The converged cpu-scale studies of results/experiments/, one after another on this machine:
#   scripts/run_cpu_studies.sh [STUDY ...]        (default: all eight, in the order below)
# Each: `sweep --dry-run -o` (the estimate, kept in the study folder), the sweep with 2 workers x 1 thread,
# then `report` into results/experiments/<study>_cpu. Data: ../shared/data/cifar-10-subset (the study
# files' cpu scales point there). Nothing else should run meanwhile: the reports record the wall time.
set -uo pipefail
cd "$(dirname "$0")/.."
SL=${SQUEEZELAB:-squeezelab}
STUDIES=("$@")
[ ${#STUDIES[@]} -eq 0 ] && STUDIES=(table3_bypass fig3a_squeeze_ratio squeezenet_vs_alexnet bn_fire
                                     report000_variants fig3b_pct_3x3 report001_fires report003_conv1_pct)
for s in "${STUDIES[@]}"; do
    dir=studies/$s-cpu
    echo "== $s $(date -u +%H:%M:%S)"
    $SL sweep experiments/$s.yaml --scale cpu --workers 2 --dry-run -o "$dir" | tail -n 2
    $SL sweep experiments/$s.yaml --scale cpu --workers 2 --set train.threads=1 -o "$dir" | tail -n 1
    $SL report "$dir" -o results/experiments/${s}_cpu
done
echo "== done $(date -u +%H:%M:%S)"
