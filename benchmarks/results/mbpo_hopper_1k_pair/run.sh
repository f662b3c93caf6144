#!/usr/bin/env bash
# Issue 22's MBPO Hopper bar: the filing commit 3a2ceb3 (extra.compile=true) against this checkout
# (compile=on), 5,000 random + 1,000 learning steps at UTD 20, seed 0, one thread each, started together.
# Usage (repository root, after scripts/setup.sh): git worktree add ../filing 3a2ceb3 &&
#   bash benchmarks/results/mbpo_hopper_1k_pair/run.sh ../filing OUT [NAME=VALUE ...]
# Each NAME=VALUE after OUT is a --set of this checkout's run (precision=bf16: ../precision_bf16).
set -eu
filing=$(cd "$1" && pwd); mkdir -p "$2"; out=$(cd "$2" && pwd); repo=$(pwd); shift 2
sets=(); for s in "$@"; do sets+=(--set "$s"); done
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
(cd "$filing" && PYTHONPATH="$filing" "$repo/.venv/bin/python" -m torchrl_vmbpo.cli train --algo mbpo --env Hopper-v5 \
  --steps 6000 --seed 0 --out "$out/before" --no-progress --set extra.compile=true) > "$out/before.log" 2>&1 &
(.venv/bin/vmbpo train --algo mbpo --env Hopper-v5 --steps 6000 --seed 0 --out "$out/after" --no-progress \
  --set compile=on "${sets[@]}") > "$out/after.log" 2>&1 &
wait
