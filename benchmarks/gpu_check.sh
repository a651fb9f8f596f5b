#!/usr/bin/env bash
# What a lent GPU checks, in one run (docs/performance.md, "GPU checks"): rosd's HF engine, teacher
# scoring and train step in tokens/s with MFU, and the weight push into the engine
# (gpu_throughput.py); then rounds held resident against the same rounds fused, every stage on the
# GPU (round_cost.py: the world model, then a Qwen3-0.6B-shaped one). JSON files go to $OUT
# (default results/gpu_check); $PYTHON picks the interpreter.
#
#   bash benchmarks/gpu_check.sh           # on one H100: about 10 minutes
#   bash benchmarks/gpu_check.sh --smoke   # tiny shapes, on the GPU if there is one, else the CPU (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=0
if [[ "${1:-}" == "--smoke" ]]; then
    smoke=1
fi
out="${OUT:-results/gpu_check}"
python="${PYTHON:-python}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
device=$("$python" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
echo "gpu_check on $device"
if ((smoke)); then
    "$python" benchmarks/gpu_throughput.py --smoke --out "$out/gpu_throughput.json"
    # two stages timed every way (one without a model, the trainer), and round 2 resident and fused
    "$python" benchmarks/round_cost.py --config tiny --device "$device" --rounds 2 --repeats 1 \
        --stages grade distill --out "$out/round_cost.json"
else
    "$python" benchmarks/gpu_throughput.py --out "$out/gpu_throughput.json"
    "$python" benchmarks/round_cost.py --device "$device" --rounds 3 --repeats 1 --rounds-only \
        --out "$out/round_cost_world.json"
    "$python" benchmarks/round_cost.py --config tiny --model qwen3-0.6b --device "$device" --rounds 3 --repeats 1 \
        --rounds-only --out "$out/round_cost_qwen3_0.6b.json"
fi
