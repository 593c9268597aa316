#!/usr/bin/env bash
# The motion head on one GPU, in calls that fit a 10-minute command limit. Each phase appends its tables to
# bench/RESULTS.md and copies that file (and what else the phase keeps) to $OUT.
#
#   bash bench/gpu_motion.sh speed     # training step, pixel vs motion head, both presets; full-resolution animation
#   bash bench/gpu_motion.sh study     # pack train + held-out shards, start the three 64 px trainings (detached)
#   bash bench/gpu_motion.sh wait      # report the trainings' progress (keeps the machine held)
#   bash bench/gpu_motion.sh collect   # motion metrics of every snapshot, curves, the best motion model's weights
#
# On a box without the project's dependencies, carried wheels in .whl/ are installed to /tmp/site first (PyAV,
# WebDataset); VSYN_COMMIT names the commit measured (the tree travels without .git).
set -uo pipefail
phase=${1:?phase: speed, study, wait or collect}
W=${VSYN_GPU_WORK:-/root/vsyn-gpu}
OUT=${OUT:-$W/out}
mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if [ -d .whl ] && [ ! -d /tmp/site/av ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD

if [ "$phase" = speed ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  timeout 250 python3 bench/train.py --configs bair64,motion64 --precision bf16+penalty --layout cl --mode graphed \
    --cycles 30 --warmup 3 2>&1 | grep -E "^\||rror|Traceback"
  timeout 170 python3 bench/train.py --configs sky128,motion128 --precision bf16+penalty --layout cl --mode eager \
    --cycles 6 --warmup 2 2>&1 | grep -E "^\||rror|Traceback"
  timeout 120 python3 bench/animate.py --device cuda --config motion128 --sizes 1920x1080 --frames 25 \
    --precision fp32,bf16 --loop off,on --repeats 7 2>&1 | grep -E "^\||rror|Traceback"
  cp bench/RESULTS.md "$OUT"/
fi
