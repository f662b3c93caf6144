#!/usr/bin/env bash
# Issue 22's GPU checks on a lent GPU machine, in one call that fits its device-time budget (~8 min).
#
#   bash benchmarks/gpu_session.sh OUT
#
# Runs from the repository root of a copy of the working tree with the machine's python3 (torch with
# CUDA) plus the wheels in .whl_gpu/ (torchrl, tensordict, gymnasium, mujoco, tqdm, matplotlib; carry
# it; see benchmarks/pets_gpu_session.sh). In order, each under its own timeout, results in OUT:
#   1. the CUDA tests (tests/training/test_device.py: every preset on the GPU, CPU<->GPU resumes,
#      compiled updates as CUDA graphs; tests/planners/test_cuda_graph.py) -> pytest.log;
#   2. benchmarks/phase_timing.py --device cuda (every phase against cuBLAS at the same shapes)
#      -> phase_timing_cuda_1t.{json,md};
#   3. MBPO and VMBPO on Hopper-v5, 5,000 random + 500 learning steps at UTD 20, compiled, alone on
#      the GPU: ms per learning env step from their summaries -> hopper_<algo>/summary.json;
#   4. 1, 4 and 8 concurrent MBPO runs (1,000 random + 300 learning steps each, one CPU thread each):
#      each run's updates per second -> concurrent_<N>_<i>/summary.json.
# TORCHRL_VMBPO_COMMIT=<commit> names the code in the records (the copy there has no git metadata).
set -u
out=${1:?OUT directory}
mkdir -p "$out"
exec > >(tee -a "$out/session.log") 2>&1
source "$(dirname "$0")/gpu_env.sh"  # $py, with the carried wheels installed if needed
export PYTHONUNBUFFERED=1 MUJOCO_GL=disable OMP_NUM_THREADS=1
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())" || exit 1

timeout 240 $py -m pytest -q -p no:cacheprovider tests/training/test_device.py tests/planners/test_cuda_graph.py \
    > "$out/pytest.log" 2>&1
echo "CUDA tests: $(tail -n 1 "$out/pytest.log")"

timeout 180 $py benchmarks/phase_timing.py --device cuda --rounds 5 --out "$out/phase_timing_cuda_1t" > /dev/null
echo "phase timing: $(ls "$out"/phase_timing_cuda_1t.* 2>/dev/null | tr '\n' ' ')"

train() {  # NAME ALGO STEPS RANDOM
    $py -m torchrl_vmbpo.cli train --algo "$2" --env Hopper-v5 --steps "$3" --out "$out/$1" --no-progress --overwrite \
        --set device=cuda --set compile=on --set init_random_steps="$4" --set eval_every="$3" --set checkpoint=false \
        > "$out/$1.log" 2>&1
}
for algo in mbpo vmbpo; do
    timeout 150 bash -c "$(declare -f train); py=$py out=$out; train hopper_$algo $algo 5500 5000"
    $py - "$out/hopper_$algo/summary.json" <<'PY' || true
import json, sys
s = json.load(open(sys.argv[1]))
p = s["phase_seconds"]
learn = sum(p.get(k, 0.0) for k in ("model_fit", "imagine", "update"))
print(f"{s['algo']}: {1000 * learn / 500:.1f} ms per learning env step (model fit + imagine + 20 updates), "
      f"updates/s {s['updates_per_second']}, phases {p}")
PY
done

for n in 1 4 8; do
    for i in $(seq 1 "$n"); do
        timeout 150 bash -c "$(declare -f train); py=$py out=$out; train concurrent_${n}_$i mbpo 1300 1000" &
    done
    wait
    $py - "$out" "$n" <<'PY' || true
import json, pathlib, sys
out, n = pathlib.Path(sys.argv[1]), int(sys.argv[2])
rates = [json.load(open(p))["updates_per_second"] for p in sorted(out.glob(f"concurrent_{n}_*/summary.json"))]
print(f"{n} concurrent MBPO runs: updates/s {rates}")
PY
done
