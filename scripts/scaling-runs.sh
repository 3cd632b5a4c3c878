#!/usr/bin/env bash
# The emulated runs behind docs/scaling.md (needs root; see scripts/netns-cluster.sh). Writes one
# JSON per run into OUTDIR (default runs/scaling); scripts/scaling_model.py reads them.
#   1. bench allreduce --algo auto, H = 2, 4, 8 hosts x 1 worker at 1 and 10 Gbit/s: the link
#      probe's costs, the model's prediction and the measured time per size;
#   2. 4 hosts x 2 workers at 1 Gbit/s: flat ring vs hierarchical (pipelined, and unpipelined
#      with LOCKSTEP_PIPELINE_BYTES=0) vs auto;
#   3. training the MLP 784-1024-1024-10 on 4 x 2 (auto, hier and ring) and 4 x 1 at 1 Gbit/s.
set -euo pipefail
OUT=${1:-runs/scaling}
BIN=${BIN:-target/release/lockstep}
SIZES=${SIZES:-1MiB,7400000,32MiB}
mkdir -p "$OUT"
cluster() { scripts/netns-cluster.sh -b "$BIN" "$@"; }

for rate in 1gbit 10gbit; do
    for h in 2 4 8; do
        cluster -H "$h" -W 1 -r "$rate" bench --algo auto --sizes "$SIZES" --repeat 3 --iters 5 \
            --json "$OUT/bench-h$h-w1-$rate.json" 2>"$OUT/bench-h$h-w1-$rate.err" | tail -5
    done
done
for algo in ring hier auto; do
    cluster -H 4 -W 2 -r 1gbit bench --algo "$algo" --sizes 7400000,32MiB --repeat 3 --iters 5 \
        --json "$OUT/bench-h4-w2-1gbit-$algo.json" 2>"$OUT/bench-h4-w2-1gbit-$algo.err" | tail -4
done
LOCKSTEP_PIPELINE_BYTES=0 cluster -H 4 -W 2 -r 1gbit bench --algo hier --sizes 7400000,32MiB \
    --repeat 3 --iters 5 --json "$OUT/bench-h4-w2-1gbit-hier-unpipelined.json" \
    2>"$OUT/bench-h4-w2-1gbit-hier-unpipelined.err" | tail -4
MLP=(examples/mnist-mlp/cluster.toml --set 'job.model.hidden=[1024,1024]' --set job.epochs=1)
for run in "4 2 auto" "4 2 hier" "4 2 ring" "4 1 auto"; do
    set -- $run
    dir="$OUT/train-h$1-w$2-$3"
    cluster -H "$1" -W "$2" -r 1gbit -o "$dir" train "${MLP[@]}" --set "cluster.allreduce=\"$3\"" || true
done
