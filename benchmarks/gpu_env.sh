# Sourced by the GPU session scripts (gpu_session.sh, gpu_records_session.sh, pets_gpu_session.sh):
# sets $py to the machine's python3 (or $PYTHON) and, where that lacks this project's dependencies,
# installs the carried wheels of .whl_gpu/ into /tmp/site (benchmarks/tuning/pets-gpu/README.md says
# how to download them).
py=${PYTHON:-python3}
if ! $py -c "import torchrl, mujoco, gymnasium" 2>/dev/null && [ -d .whl_gpu ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl_gpu/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$PWD"
fi
