#!/usr/bin/env bash
# Record runs of any algorithm on a lent GPU machine, in one command that fits its device-time budget.
#
#   bash benchmarks/gpu_records_session.sh OUT DEADLINE_S ALGO:ENV:STEPS:SEED [...]
#
# e.g. `... OUT 480 vmbpo:Pendulum-v1:10000:0 vmbpo:Pendulum-v1:10000:1 mbpo:Reacher-v5:10000:2`.
# Runs from the repository root of a copy of the working tree with the machine's own python3 (torch
# with CUDA) plus the wheels in .whl_gpu/ (torchrl, tensordict, gymnasium, mujoco, tqdm, matplotlib:
# benchmarks/tuning/pets-gpu/README.md says how to download them). Ray is not on that machine and its
# wheels do not fit in the 64 MiB a call carries, so each run is a plain `vmbpo train` process (not
# benchmarks/run.py), all at once, one CPU thread each, `--set device=cuda --set compile=on`.
# Each run lands where benchmarks/run.py keeps records (RESULTS_DIR, default benchmarks/results):
# a run folder with a checkpoint.pt (committed by an earlier session) is resumed, a finished one
# (summary.json at STEPS) skipped. At DEADLINE_S seconds after the start the runs still going get
# SIGTERM (each writes its checkpoint and stops; a later call or a CPU resumes it). Then every run
# folder this call changed lands in OUT as one results_<algo>_<env>_seed<S>.tgz (unpack with
# `tar xzf F -C benchmarks/results`), each run's stdout/stderr inside it as train.log; a finished
# run's checkpoint.pt is deleted first (benchmarks/run.py's rule: records keep curves, not checkpoints). The device
# returns at most 8 files of 16 MiB each: a stopped run's archive carries its checkpoint (16-18 MB for
# VMBPO on Hopper sizes: too large), so plan runs that finish in the window, at most 7 per call.
# Call it with TORCHRL_VMBPO_COMMIT=<commit> (the copy there has no git metadata) and carry .whl_gpu.
# A dry run on a CPU: DEVICE=cpu RESULTS_DIR=<scratch folder> with small STEPS.
set -u
out=${1:?OUT directory}
deadline=${2:?deadline in seconds}
shift 2
[ $# -gt 0 ] || { echo "give at least one ALGO:ENV:STEPS:SEED run" >&2; exit 2; }
device=${DEVICE:-cuda}
results=${RESULTS_DIR:-benchmarks/results}
start=$(date +%s)
mkdir -p "$out" "$results"
exec > >(tee -a "$out/session.log") 2>&1
left() { echo $((deadline - ($(date +%s) - start))); }

source "$(dirname "$0")/gpu_env.sh"  # $py, with the carried wheels installed if needed
export PYTHONUNBUFFERED=1 MUJOCO_GL=disable OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
$py -c "import torch, torchrl; print('torch', torch.__version__, 'torchrl', torchrl.__version__,
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())" || exit 1

touch "$out/.runs_start"  # the run folders changed after this are the ones to send back
pids=()
folders=()
targets=()
finished() {  # RUN STEPS: a summary.json at STEPS or more
    [ -f "$1/summary.json" ] && $py -c "import json,sys; sys.exit(json.load(open('$1/summary.json'))['env_steps'] < $2)"
}
for spec in "$@"; do
    IFS=: read -r algo env steps seed <<< "$spec"
    if [ -z "$seed" ]; then echo "bad run $spec: ALGO:ENV:STEPS:SEED expected" >&2; continue; fi
    run="$results/$algo/${env//\//_}/seed$seed"
    if finished "$run" "$steps"; then
        echo "finished already: $run"
        continue
    fi
    mkdir -p "$run"
    if [ -f "$run/checkpoint.pt" ]; then
        args=(--resume --out "$run" --steps "$steps")
    else
        args=(--algo "$algo" --env "$env" --steps "$steps" --seed "$seed" --out "$run")
    fi
    setsid $py -m torchrl_vmbpo.cli train "${args[@]}" --no-progress --set "device=$device" --set compile=on \
        >> "$run/train.log" 2>&1 &
    pids+=($!)
    folders+=("$run")
    targets+=("$steps")
    echo "started $spec -> $run (${args[0]})"
done
while [ "$(left)" -gt 0 ]; do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 1 ] || break
    sleep 5
done
for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null && echo "deadline: SIGTERM to $pid"; done
for pid in "${pids[@]}"; do wait "$pid"; done
for i in "${!folders[@]}"; do
    run=${folders[$i]}
    echo "$run: $(tail -n 1 "$run/metrics.csv" 2>/dev/null)"
    [ -n "$(find "$run" -newer "$out/.runs_start" -print -quit)" ] || continue
    find "$run" -name "*.tmp" -delete
    # A finished record keeps its curves and summary, not its large checkpoint (as benchmarks/run.py).
    if finished "$run" "${targets[$i]}"; then rm -f "$run/checkpoint.pt"; fi
    name=$(echo "$run" | sed "s|^$results/||; s|/|_|g")
    tar czf "$out/results_$name.tgz" -C "$results" "${run#"$results"/}"
done
rm -f "$out/.runs_start"
n=$(ls "$out"/results_*.tgz 2>/dev/null | wc -l)
[ "$n" -le 7 ] || echo "WARNING: $n run archives: the device returns 8 files in all, some will stay behind"
echo "done in $(( $(date +%s) - start )) s"
