#!/usr/bin/env bash
# The checks that need a GPU, as one command (the CUDA tests and the GPU step cost). On a machine with a CUDA torch
# and triton, from the repository root:
#   bash benchmarks/gpu_check.sh OUT           # about 4 minutes on an H100
# then copy OUT's files into benchmarks/results/cuda_h100/ and compare them with docs/benchmarks.md. Writes, into OUT
# (at most 7 files, as the device tool brings back 8): pytest_cuda.log, and step_cost_cuda{,_high}.{md,json,png}.
# DEVICE=cpu SIZES="1e4 1e5" runs the same flow here, to check the script itself.
set -uo pipefail
out=${1:?usage: gpu_check.sh OUT}
device=${DEVICE:-cuda}
sizes=${SIZES:-1e6 1e7 1e8}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
status=0
"$python" - <<'PY' 2>&1 | tee "$out/pytest_cuda.log"
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
# every test that runs on CUDA: the Triton kernel's (tests/test_triton_backend.py, against the reference) and the other
# files' CUDA cases; off CUDA only listed (--co), to check this script
collect=$( [ "$device" = cuda ] || echo "--co" )
failed=$( [ "$device" = cuda ] && echo 1 || echo 0 )  # off CUDA the Triton file collects nothing: not a failure
"$python" -m pytest -q -p no:cacheprovider tests/test_triton_backend.py $collect 2>&1 | tail -n 30 \
    | tee -a "$out/pytest_cuda.log" || status=$failed
"$python" -m pytest -q -p no:cacheprovider tests -k "cuda and not test_triton_backend" $collect 2>&1 | tail -n 30 \
    | tee -a "$out/pytest_cuda.log" || status=1
for precision in highest high; do
    "$python" -m benchmarks.step_cost --device "$device" --sizes $sizes --repeats 5 --matmul-precision "$precision" \
        --out "$out" 2>&1 | tail -n 12 || status=1
done
ls -l "$out"
exit $status
