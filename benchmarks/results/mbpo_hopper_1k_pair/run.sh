#!/usr/bin/env bash
# Issue 22's MBPO Hopper bar: filing commit 3a2ceb3 (extra.compile=true) vs HEAD (compile=on),
# 5,000 random + 1,000 learning steps at UTD 20, seed 0, one thread each, started together.
cd /work/runs/pair22 && rm -rf before after
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
(cd /work/filing && PYTHONPATH=/work/filing /work/main/.venv/bin/python -m torchrl_vmbpo.cli train --algo mbpo --env Hopper-v5 --steps 6000 --seed 0 --out /work/runs/pair22/before --no-progress --set extra.compile=true) > before.log 2>&1 &
(cd /work/main && .venv/bin/vmbpo train --algo mbpo --env Hopper-v5 --steps 6000 --seed 0 --out /work/runs/pair22/after --no-progress --set compile=on) > after.log 2>&1 &
wait
date -u
