#!/usr/bin/env bash
# PETS's records on a lent GPU machine, in one command that fits its device-time budget.
#
#   bash benchmarks/pets_gpu_session.sh OUT DEADLINE_S [STEPS_SCALE]
#
# Runs from the repository root of a copy of the working tree, with the machine's own python3
# (torch with CUDA) plus the wheels in .whl_gpu/ (torchrl, tensordict, gymnasium, mujoco: see
# benchmarks/tuning/pets-gpu/README.md; since issue 23 benchmarks/run.py runs its runs as Ray Tune
# trials, so .whl_gpu/ needs ray[tune]'s wheels too, e.g. `pip download -c constraints.txt "ray[tune]"`;
# --jobs 9 gives each run 1/9 of the GPU). In order:
#   1. the CUDA-only tests (tests/planners/test_cuda_graph.py): the runs plan with CUDA graphs
#      (extra.cuda_graph=true) only if they pass;
#   2. the planning cost at PETS's published settings, CUDA graph and eager, alone on the GPU;
#   3. PETS on Pendulum-v1 (3k), InvertedPendulum-v5 (3k) and Reacher7DoF (10k), seeds 0-2, all nine
#      in parallel (one CPU thread each, planning on the GPU), checkpointing every 1000 steps.
# At DEADLINE_S seconds after the start the runs still going are stopped (benchmarks/run.py resumes
# them from their checkpoint later, on a GPU or a CPU), and everything lands in OUT: one
# results_<env>_seed<N>.tgz per run directory this call changed (unpack with
# `tar xzf F -C benchmarks/results`), cost.tgz (with pytest.log) and session.log. The device returns
# at most 8 files of 16 MiB each and wipes untracked files between calls, so each run travels alone
# (a 2,000-step checkpoint is ~11 MB; session 7 lost three Reacher7DoF runs packed into one 30 MB
# archive) and at most 6 runs should be left to run in one call. Call it with
# TORCHRL_VMBPO_COMMIT=<commit> (the copy there has no usable git metadata) and carry .whl_gpu.
# CHECKS=0 skips steps 1 and 2 (done on an H100 in session 7: 8 passed; the runs then plan with CUDA
# graphs, extra.cuda_graph's default). STEPS_SCALE (default 1) divides the step counts: a dry run
# on a CPU uses DEVICE=cpu, a large scale and RESULTS_DIR=<a scratch folder>.
set -u
out=${1:?OUT directory}
deadline=${2:?deadline in seconds}
scale=${3:-1}
device=${DEVICE:-cuda}
start=$(date +%s)
log="$out/session.log"
# Runs land where benchmarks/run.py keeps them, so a run stopped at an earlier session's deadline
# (committed with its checkpoint.pt) is resumed and a finished one is skipped.
results=${RESULTS_DIR:-benchmarks/results}
mkdir -p "$results" "$out/cost"
exec > >(tee -a "$log") 2>&1
left() { echo $((deadline - ($(date +%s) - start))); }

source "$(dirname "$0")/gpu_env.sh"  # $py, with the carried wheels installed if needed
# No rendering: EGL is missing on the H100 machine and MUJOCO_GL=egl fails at import there.
export PYTHONUNBUFFERED=1 MUJOCO_GL=disable
$py -c "import torch, torchrl, tensordict, mujoco; print('torch', torch.__version__, 'torchrl', torchrl.__version__,
'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())" || exit 1

graph_set=()
if [ "$device" = cuda ] && [ "${CHECKS:-1}" != 0 ]; then
    # The runs plan with CUDA graphs (the default) only if these pass on this GPU.
    if ! timeout 150 $py -m pytest -q -p no:cacheprovider tests/planners/test_cuda_graph.py > "$out/cost/pytest.log" 2>&1; then
        graph_set=(--set extra.cuda_graph=false)
    fi
    echo "CUDA-graph tests: $(tail -n 1 "$out/cost/pytest.log") -> runs with ${graph_set[*]:-CUDA graphs}"
    for graph in --cuda-graph ""; do
        tag=$([ -n "$graph" ] && echo graph || echo eager)
        $py benchmarks/pets_planning_cost.py --device cuda $graph --rounds 10 --tag "h100_${tag}_Pendulum-v1" \
            --out "$out/cost" | tail -n 25
    done
    $py benchmarks/pets_planning_cost.py --device cuda --cuda-graph --rounds 10 \
        --env torchrl_vmbpo/Reacher7DoF-v0 --tag h100_graph_Reacher7DoF-v0 --out "$out/cost" | tail -n 25
fi
echo "runs start with $(left) s left"
touch "$out/.runs_start"  # the run directories changed after this are the ones to send back

# Nine runs at once (setsid: one process group to stop at the deadline).
setsid $py benchmarks/run.py --algos pets --seeds 0 1 2 --jobs 9 --results "$results" \
    --envs "Pendulum-v1:$((3000 / scale))" "InvertedPendulum-v5:$((3000 / scale))" \
    "torchrl_vmbpo/Reacher7DoF-v0:$((10000 / scale))" \
    --set "extra.device=$device" --set "checkpoint_every=$((1000 / scale))" "${graph_set[@]}" &
runs=$!
while kill -0 $runs 2>/dev/null && [ "$(left)" -gt 0 ]; do sleep 5; done
if kill -0 $runs 2>/dev/null; then
    echo "deadline: stopping the runs still going"
    kill -- -$runs 2>/dev/null
    sleep 3
fi
wait $runs  # not a bare wait: it would wait for the tee above too
for f in $(find "$results/pets" -name metrics.csv | sort); do echo "$f: $(tail -n 1 "$f")"; done
# One archive per run directory this call changed (with its seedN.log, if the run failed).
find "$results/pets" -name "*.tmp" -delete
for run in "$results"/pets/*/seed*/; do
    run=${run%/}
    [ -n "$(find "$run" -newer "$out/.runs_start" -print -quit)" ] || continue
    env=$(basename "$(dirname "$run")")
    logs=$(cd "$results" && ls "pets/$env/$(basename "$run").log" 2>/dev/null)
    tar czf "$out/results_${env}_$(basename "$run").tgz" -C "$results" "pets/$env/$(basename "$run")" $logs
done
rm -f "$out/.runs_start"
n=$(ls "$out"/results_*.tgz 2>/dev/null | wc -l)
[ "$n" -le 6 ] || echo "WARNING: $n run archives: the device returns 8 files in all, some will stay behind"
tar czf "$out/cost.tgz" -C "$out" cost && rm -rf "$out/cost"
echo "done in $(( $(date +%s) - start )) s"
