#!/usr/bin/env bash
# The training-throughput GPU measurements on one 4-GPU host, in two phases that fit 10-minute command limits.
# State lives under $W between the phases, so both must run on the same (still held) machine.
#
#   bash bench/gpu_suite.sh a   # pack shards; start two >=15-min training runs (style on GPU 3, DVD-GAN-S on
#                               # GPU 2); single-GPU step benchmarks on GPUs 0 and 1
#   bash bench/gpu_suite.sh s   # one GPU: penalty precision vs float64, then the critic-step levers (penalty under
#                               # autocast, channels_last_3d, regional compile) row by row, with one profile each
#   bash bench/gpu_suite.sh g   # 4-GPU host: the CUDA-graph tests, then eager vs graphed steps
#                               # (64 px on GPU 0, 128 px on GPU 1, 128 px compiled on GPU 2), all at once
#   bash bench/gpu_suite.sh w   # 1/2/4-GPU weak scaling, DDP and ZeRO-2 (nothing else on the host)
#   bash bench/gpu_suite.sh n   # one H100, what is still unmeasured there: GPU tests, graphed 64/128 px steps,
#                               # multi-worker serving (one after another, nothing else on the host)
#   bash bench/gpu_suite.sh m   # one H100: 128 px profiles, 64 px rows, serving, GPU tests
#   bash bench/gpu_suite.sh q   # 4-GPU host, one job a GPU: generator breakdown, 128/64 px rows, 128 px profile, tests
#   bash bench/gpu_suite.sh y   # 4-GPU host: 128 px weak scaling 1/2/4 GPUs, DDP channels_last and ZeRO-2 NCHW
#   bash bench/gpu_suite.sh f   # one H100: fused-generator A/B and layouts, serving nchw vs channels_last, 128 px row
#   bash bench/gpu_suite.sh e   # one H100: serving, encodes in processes vs threads, batch 8/16/32
#   bash bench/gpu_suite.sh z   # 4-GPU host: weak scaling, DDP channels_last and ZeRO-2 NCHW (ZeRO refuses cl)
#   bash bench/gpu_suite.sh p   # one H100, not yet run: serving with generate_chunk against
#                               # the best split so far, then the RGB conv as time-to-channels conv2d (conv3d.py)
#   bash bench/gpu_suite.sh x   # any other letter: only the set-up (carried wheels into /tmp/site), then run a bench
#                               # script by hand with PYTHONPATH=/tmp/site:$PWD (the 2026-11-27 08:28-09:30 calls; each
#                               # command is in its bench/RESULTS.md block)
#   bash bench/gpu_suite.sh t [CONFIG]  # one GPU, 64 px (bair64, or motion64): the trainer end to end (4096
#                               # procedural clips, 6 workers, snapshots every 4 kimg, samples every 16) beside
#                               # bench/train.py's step, with the breakdown (about 6 min)
#   bash bench/gpu_suite.sh u [CONFIG]  # one GPU, 128 px (sky128, or motion128): the same (1024 clips, snapshots
#                               # every kimg); the warm-up lines (eager calls and capture per phase) printed after
#   bash bench/gpu_suite.sh v   # one GPU, 128 px warm-up levers, one process each: train.cudnn_benchmark_limit=1,
#                               # then train.cudnn_benchmark=false (compare warm-up and clips/s with phase u's row)
#   bash bench/gpu_suite.sh r RUNTIME COUNTS   # one multi-GPU host: weak scaling end to end and step, RUNTIME ddp
#                               # (channels_last) or deepspeed (ZeRO-2, NCHW), COUNTS e.g. 1,8 or 1,4; both data.reading
#                               # modes at N > 1. ~7-8 min for COUNTS=1,N
#   bash bench/gpu_suite.sh b   # 1/2/4-GPU weak scaling (DDP, ZeRO-2) once the runs end; motion benchmark;
#                               # copy logs, loss curves and sample grids to $OUT
#
# On a box without the project's dependencies, carried wheels in .whl/ are installed to /tmp/site first.
set -uo pipefail
phase=${1:?phase letter (see above)}
W=${VSYN_GPU_WORK:-/root/vsyn-gpu}
OUT=${OUT:-$W/out}
TRAIN_SECONDS=${TRAIN_SECONDS:-905}
mkdir -p "$W" "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export TORCH_EXTENSIONS_DIR=$W/torch_extensions
if [ -d .whl ] && [ ! -d /tmp/site/pydantic ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD
if [ ! -d /tmp/site/vsyn_checkout-0.dist-info ]; then  # the project's entry points (vsyn shards ...) without installing it
  mkdir -p /tmp/site/vsyn_checkout-0.dist-info
  printf 'Metadata-Version: 2.1\nName: vsyn-checkout\nVersion: 0\n' > /tmp/site/vsyn_checkout-0.dist-info/METADATA
  python3 -c 'import tomllib; eps = tomllib.load(open("pyproject.toml", "rb"))["project"]["entry-points"]
for group, items in eps.items():
    print(f"[{group}]"); [print(f"{k} = {v}") for k, v in items.items()]' \
    > /tmp/site/vsyn_checkout-0.dist-info/entry_points.txt
fi
shards() {  # `vsyn shards ...` without an installed entry point
  python3 -c 'import argparse, sys
from shards.cli import register
p = argparse.ArgumentParser(prog="vsyn"); register(p.add_subparsers())
a = p.parse_args(["shards", *sys.argv[1:]]); sys.exit(a.func(a))' "$@"
}
RUN_ARGS=(train.precision=bf16 train.total_kimg=100000 train.tick_kimg=2 train.snapshot_kimg=4 train.sample_kimg=4
          train.keep_last=40 train.trackers= train.log_every=20 data.workers=6)

if [ "$phase" = a ]; then
  t0=$(date +%s)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  shards pack procedural "$W/p64" --clips 16384 --size 64 --frames 25 --workers 16 --seed 0 | tail -1
  shards pack procedural "$W/p128" --clips 2048 --size 128 --frames 25 --workers 16 --seed 0 | tail -1
  for g in style_rnn:3 dvdgan:2; do
    gen=${g%:*}; gpu=${g#*:}
    # SIGTERM at the deadline: the trainer saves a full checkpoint and exits 3 (the preemption path)
    CUDA_VISIBLE_DEVICES=$gpu setsid timeout -s TERM "$TRAIN_SECONDS" python3 -m vsyn train bair64 \
      model.generator="$gen" data.train="$W/p64/manifest.json" train.run_dir="$W/run-$gen" "${RUN_ARGS[@]}" \
      > "$W/train-$gen.log" 2>&1 < /dev/null &
    echo "training $gen on GPU $gpu (pid $!)"
  done
  deadline=$((t0 + 560))
  left() { echo $((deadline - $(date +%s))); }
  (
    export CUDA_VISIBLE_DEVICES=0
    for pm in "fp32 eager" "bf16 eager" "bf16 compiled" "fp32 compiled"; do
      set -- $pm; timeout "$(left)" python3 bench/train.py --configs sky128 --precision "$1" --mode "$2" --cycles 10 --warmup 3
    done
    timeout "$(left)" python3 bench/train.py --configs sky128 --precision bf16 --mode eager --shards "$W/p128" --workers 8 --cycles 10
  ) > "$W/bench-gpu0.log" 2>&1 &
  bench0=$!
  (
    export CUDA_VISIBLE_DEVICES=1
    for pm in "fp32 eager" "bf16 eager" "bf16 compiled" "fp32 compiled"; do
      set -- $pm; timeout "$(left)" python3 bench/train.py --configs bair64 --precision "$1" --mode "$2" --cycles 20 --warmup 3
    done
    timeout "$(left)" python3 bench/train.py --configs bair64 --precision bf16 --mode eager --shards "$W/p64" --workers 8 --cycles 20
    timeout "$(left)" python3 bench/train.py --configs bair64,sky128 --precision bf16 --mode eager --channels-last --cycles 10
  ) > "$W/bench-gpu1.log" 2>&1 &
  bench1=$!
  wait "$bench0" "$bench1"
  cat "$W/bench-gpu0.log" "$W/bench-gpu1.log" | grep -E "^\||TFLOP|rror|Traceback" | head -60
  for f in "$W"/train-*.log; do echo "== $f"; tail -c 600 "$f"; echo; done
  cp "$W"/bench-gpu*.log bench/RESULTS.md "$OUT"/
fi

if [ "$phase" = s ]; then
  t0=$(date +%s); deadline=$((t0 + ${SUITE_SECONDS:-500}))
  left() { echo $((deadline - $(date +%s))); }
  keep() { cp bench/RESULTS.md "$OUT"/; }  # after every step: a kill at the limit still returns the figures
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  q() { grep -E "^\||rror|Traceback|warm-up|Self CUDA time"; }
  shards pack procedural "$W/p128" --clips 512 --size 128 --frames 25 --workers 16 --seed 0 | tail -1
  timeout "$(left)" python3 bench/train.py --configs sky128 --precision bf16+penalty --layout cl --mode eager \
    --data on-device,shards --shards "$W/p128" --workers 8 --cycles 8 --warmup 2 2>&1 | q; keep
  timeout "$(left)" python3 bench/train.py --configs bair64 --precision fp32,bf16+penalty --layout cl \
    --mode eager --cycles 10 --warmup 3 --profile "$OUT/prof" 2>&1 | q; keep
  timeout "$(left)" python3 bench/train.py --configs bair64 --precision bf16+penalty --layout cl --mode compiled \
    --cycles 10 --warmup 3 2>&1 | q; keep
fi

if [ "$phase" = g ]; then
  t0=$(date +%s); deadline=$((t0 + ${SUITE_SECONDS:-530}))
  left() { echo $((deadline - $(date +%s))); }
  keep() { cp bench/RESULTS.md "$OUT"/; }
  q() { grep -E "^\||rror|Traceback|warm-up|passed|failed|Self CUDA time"; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  shards pack procedural "$W/p128" --clips 512 --size 128 --frames 25 --workers 16 --seed 0 | tail -1
  CUDA_VISIBLE_DEVICES=0 timeout 200 python3 -m pytest -q -p no:cacheprovider tests/nn/test_graphs.py \
    tests/train/test_gan_loop.py -k "graph" 2>&1 | tail -15
  (export CUDA_VISIBLE_DEVICES=0
   timeout "$(left)" python3 bench/train.py --configs bair64 --precision fp32,bf16,bf16+penalty --layout cl \
     --mode eager,graphed --cycles 20 --warmup 3 --profile "$OUT/prof" 2>&1 | q > "$W/g0.log"
   timeout "$(left)" python3 bench/train.py --configs bair64 --precision fp32 --layout nchw \
     --mode graphed --cycles 20 --warmup 3 2>&1 | q >> "$W/g0.log") &
  (export CUDA_VISIBLE_DEVICES=1
   timeout "$(left)" python3 bench/train.py --configs sky128 --precision bf16+penalty,bf16 --layout cl \
     --mode eager,graphed --data on-device --cycles 8 --warmup 3 --profile "$OUT/prof" 2>&1 | q > "$W/g1.log"
   timeout "$(left)" python3 bench/train.py --configs sky128 --precision bf16+penalty --layout cl \
     --mode graphed --data shards --shards "$W/p128" --workers 8 --cycles 8 --warmup 3 2>&1 | q >> "$W/g1.log") &
  (export CUDA_VISIBLE_DEVICES=2
   timeout "$(left)" python3 bench/train.py --configs sky128,bair64 --precision bf16+penalty --layout cl \
     --mode compiled --cycles 8 --warmup 3 2>&1 | q > "$W/g2.log") &
  wait
  for f in "$W"/g0.log "$W"/g1.log "$W"/g2.log; do echo "== $f"; cat "$f"; done
  cp "$W"/g*.log "$OUT"/; keep
fi

if [ "$phase" = h ]; then  # 2-GPU host: GPU 0 the training steps, GPU 1 the GPU tests then serving; then ZeRO-2
  t0=$(date +%s); deadline=$((t0 + ${SUITE_SECONDS:-540}))
  left() { echo $((deadline - $(date +%s))); }
  keep() { cp bench/RESULTS.md "$OUT"/; }
  q() { grep -E "^\||rror|Traceback|warm-up|passed|failed"; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  (export CUDA_VISIBLE_DEVICES=0
   timeout "$(left)" python3 bench/train.py --configs bair64 --precision fp32,bf16,bf16+penalty --layout cl \
     --mode graphed,eager --cycles 20 --warmup 3 2>&1 | q > "$W/h0.log"; keep
   timeout "$(($(left) - 100))" python3 bench/train.py --configs sky128 --precision bf16+penalty --layout cl \
     --mode graphed --cycles 8 --warmup 3 --profile "$W/prof" 2>&1 | q >> "$W/h0.log"; keep
   cp "$W"/prof/sky128*graphed.txt "$OUT"/ 2>/dev/null) &
  (export CUDA_VISIBLE_DEVICES=1
   timeout 150 python3 -m pytest -q -p no:cacheprovider tests/nn/test_graphs.py tests/train/test_gan_loop.py \
     -k "graph or captured" 2>&1 | tail -4 > "$W/h1.log"
   for pw in "veryfast 4" "ultrafast 8" "medium 4"; do
     set -- $pw
     timeout "$(($(left) - 100))" python3 bench/serve.py --direct --device cuda --batch-size 8 \
       --max-batch-delay-ms 5 --workers "$2" --encoder-preset "$1" --concurrency 1 8 32 --requests 128 2>&1 \
       | grep -E "^\||rror|Traceback" >> "$W/h1.log"; keep
   done) &
  wait
  CUDA_VISIBLE_DEVICES=0,1 timeout "$(left)" python3 bench/train.py --configs bair64 --precision bf16 --layout nchw \
    --mode eager --cycles 20 --warmup 3 --distributed deepspeed --batch 8 2>&1 | grep -E "^\||rror" | tail -1
  CUDA_VISIBLE_DEVICES=0,1 timeout "$(left)" torchrun --standalone --nproc_per_node 2 bench/train.py --configs bair64 \
    --precision bf16 --layout nchw --mode eager --cycles 20 --warmup 3 --distributed deepspeed --batch 16 2>&1 \
    | grep -E "^\||rror" | tail -1
  keep; cat "$W"/h0.log "$W"/h1.log; cp "$W"/h*.log "$OUT"/
fi

if [ "$phase" = n ]; then
  t0=$(date +%s); deadline=$((t0 + ${SUITE_SECONDS:-540}))
  left() { echo $((deadline - $(date +%s))); }
  keep() { cp bench/RESULTS.md "$OUT"/; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/nn/test_graphs.py tests/train/test_gan_loop.py \
    -k "graph" --tb=line 2>&1 | grep -E "Error|passed|failed" | head -8
  timeout "$(($(left) - 330))" python3 bench/train.py --configs bair64 --precision fp32,bf16+penalty --layout cl \
    --mode eager,graphed --cycles 20 --warmup 3 2>&1 | grep -E "^\||rror"; keep
  timeout 40 python3 bench/serve.py --direct --device cuda --batch-size 8 --max-batch-delay-ms 5 --workers 4 \
    --encoder-preset veryfast --concurrency 1 8 32 --requests 128 2>&1 | grep -E "^\||rror"; keep
  timeout "$(left)" python3 bench/train.py --configs sky128 --precision bf16+penalty --layout cl --mode graphed \
    --cycles 8 --warmup 3 2>&1 | grep -E "^\||rror"; keep
fi

if [ "$phase" = m ]; then  # one H100: profile 128 px (eager and graphed), 64 px rows, serving, GPU tests
  t0=$(date +%s); deadline=$((t0 + ${SUITE_SECONDS:-530}))
  left() { echo $((deadline - $(date +%s))); }
  keep() { cp bench/RESULTS.md "$OUT"/; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  timeout 230 python3 bench/train.py --configs sky128 --precision bf16+penalty --layout cl --mode eager,graphed \
    --cycles 6 --warmup 2 --profile "$OUT/prof" 2>&1 | grep -E "^\||rror"; keep
  timeout 140 python3 bench/train.py --configs bair64 --precision fp32,bf16+penalty --layout cl \
    --mode eager,graphed --cycles 20 --warmup 3 2>&1 | grep -E "^\||rror"; keep
  timeout 60 python3 bench/serve.py --direct --device cuda --batch-size 8 --max-batch-delay-ms 5 --workers 4 \
    --encoder-preset veryfast --concurrency 1 8 32 --requests 128 2>&1 | grep -E "^\||rror"; keep
  timeout "$(left)" python3 -m pytest -q -p no:cacheprovider tests/nn/test_graphs.py tests/train/test_gan_loop.py \
    -k "graph" --tb=line 2>&1 | grep -E "Error|passed|failed" | head -8
fi
if [ "$phase" = q ]; then  # 4-GPU host, one GPU each: generator breakdown, 128 px rows + profile, 64 px rows, GPU tests
  t0=$(date +%s); deadline=$((t0 + ${SUITE_SECONDS:-330}))
  left() { echo $((deadline - $(date +%s))); }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  (export CUDA_VISIBLE_DEVICES=0
   timeout 150 python3 bench/generate.py --batch 1,8,32 --precision bf16,fp32 --graphs on 2>&1 | grep -E "^\||rror"
   timeout "$(left)" python3 bench/generate.py --batch 8 --precision bf16 --graphs off --profile "$W/prof" \
     --no-record 2>&1 | grep -E "^\||rror"; cp "$W"/prof/generate-*b8.txt "$OUT"/) > "$W/q0.log" 2>&1 &
  (export CUDA_VISIBLE_DEVICES=1
   timeout 200 python3 bench/train.py --configs sky128 --precision bf16+penalty --layout cl --mode graphed,eager \
     --cycles 6 --warmup 2 2>&1 | grep -E "^\||rror"
   timeout "$(left)" python3 bench/train.py --configs sky128 --precision bf16+penalty --layout cl --mode eager \
     --cycles 1 --warmup 1 --no-record --profile "$W/prof" 2>&1 | grep -E "rror"; cp "$W"/prof/sky128*.txt "$OUT"/
  ) > "$W/q1.log" 2>&1 &
  (export CUDA_VISIBLE_DEVICES=2
   timeout "$(left)" python3 bench/train.py --configs bair64 --precision bf16+penalty,fp32 --layout cl \
     --mode graphed,eager --cycles 20 --warmup 3 2>&1 | grep -E "^\||rror") > "$W/q2.log" 2>&1 &
  (export CUDA_VISIBLE_DEVICES=3
   timeout "$(left)" python3 -m pytest -q -s -p no:cacheprovider tests/nn/test_graphs.py tests/train/test_gan_loop.py \
     -k "graph" --tb=line 2>&1 | grep -E "Error|passed|failed|drift by step" | head -12) > "$W/q3.log" 2>&1 &
  wait
  for f in "$W"/q0.log "$W"/q1.log "$W"/q2.log "$W"/q3.log; do echo "== $f"; cat "$f"; done
  cp bench/RESULTS.md "$OUT"/
fi
if [ "$phase" = y ]; then  # 4-GPU host: 128 px weak scaling (GPU-bound: the config the issue's anchor is), DDP and ZeRO-2
  t0=$(date +%s); deadline=$((t0 + ${SUITE_SECONDS:-540}))
  left() { echo $((deadline - $(date +%s))); }
  for dl in "ddp cl" "deepspeed nchw"; do
    set -- $dl
    for n in 1 2 4; do
      CUDA_VISIBLE_DEVICES=0,1,2,3 timeout "$(left)" torchrun --standalone --nproc_per_node "$n" bench/train.py \
        --configs sky128 --precision bf16+penalty --layout "$2" --mode eager --cycles 5 --warmup 2 \
        --distributed "$1" --batch $((8 * n)) 2>&1 | grep -E "^\| sky|rror|Traceback" | tail -2
      cp bench/RESULTS.md "$OUT"/
    done
  done
fi
if [ "$phase" = f ]; then  # one H100: fused generator A/B, serving both layouts, 128 px
  t0=$(date +%s); deadline=$((t0 + ${SUITE_SECONDS:-380}))
  left() { echo $((deadline - $(date +%s))); }
  keep() { cp bench/RESULTS.md "$OUT"/; }
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  timeout 110 python3 bench/generate.py --batch 8,32 --precision bf16 --variant fused,unfused --layout nchw,cl \
    --graphs on 2>&1 | grep -E "^\| [0-9]|rror"; keep
  for cl in "" "--channels-last"; do
    timeout 70 python3 bench/serve.py --direct --device cuda --batch-size 8 --max-batch-delay-ms 5 --workers 4 \
      --encoder-preset veryfast --concurrency 1 8 32 --requests 128 $cl 2>&1 | grep -E "^\| [0-9]|rror"; keep
  done
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/nn/test_graphs.py tests/nn/test_modulated_conv.py \
    --tb=line 2>&1 | grep -E "Error|passed|failed" | head -6
  timeout "$(left)" python3 bench/train.py --configs sky128 --precision bf16+penalty --layout cl --mode graphed \
    --cycles 4 --warmup 2 2>&1 | grep -E "^\| sky|rror"; keep
fi
if [ "$phase" = e ]; then  # one H100: serving with encodes in processes vs threads, batch 8/16/32
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  for wbp in "4 8 4" "2 16 8" "2 32 8" "4 8 0"; do
    set -- $wbp
    timeout 85 python3 bench/serve.py --direct --device cuda --batch-size "$2" --max-batch-delay-ms 5 --workers "$1" \
      --encoder-preset veryfast --concurrency 1 8 32 64 --requests 192 --channels-last --encode-processes "$3" 2>&1 \
      | grep -E "^\| [0-9]|rror"; echo "-- workers $1 batch $2 encode processes $3"; cp bench/RESULTS.md "$OUT"/
  done
fi
if [ "$phase" = p ]; then  # one H100: generate_chunk (pipelined generate/encode) vs the 4 x 8 baseline; RGB conv forms
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  for wbcp in "4 8 0 4" "1 32 8 12" "2 16 8 8" "4 8 4 4"; do
    set -- $wbcp
    timeout 90 python3 bench/serve.py --direct --device cuda --batch-size "$2" --max-batch-delay-ms 5 --workers "$1" \
      --encoder-preset veryfast --concurrency 1 8 32 64 --requests 192 --channels-last --generate-chunk "$3" \
      --encode-processes "$4" 2>&1 | grep -E "^\| [0-9]|rror"
    echo "-- workers $1 batch $2 chunk $3 encode processes $4"; cp bench/RESULTS.md "$OUT"/
  done
  timeout 60 python3 bench/conv3d.py --batch 16 --reps 8 --layers block1.conv1 2>&1 | grep -E "^\| b|rror"
  cp bench/RESULTS.md "$OUT"/
fi
if [ "$phase" = z ]; then
  t0=$(date +%s); deadline=$((t0 + ${SUITE_SECONDS:-560}))
  left() { echo $((deadline - $(date +%s))); }
  for dl in "ddp cl" "deepspeed nchw"; do
    set -- $dl
    for n in 1 2 4; do
      CUDA_VISIBLE_DEVICES=0,1,2,3 timeout "$(left)" torchrun --standalone --nproc_per_node "$n" bench/train.py \
        --configs bair64 --precision bf16 --layout "$2" --mode eager --cycles 15 --warmup 2 --distributed "$1" \
        --batch $((8 * n)) 2>&1 | grep -E "^\||rror|Traceback" | tail -2
      cp bench/RESULTS.md "$OUT"/
    done
  done
fi

if [ "$phase" = w ]; then
  t0=$(date +%s); deadline=$((t0 + ${SUITE_SECONDS:-540}))
  left() { echo $((deadline - $(date +%s))); }
  for dist in ddp deepspeed; do
    for n in 1 2 4; do
      CUDA_VISIBLE_DEVICES=0,1,2,3 timeout "$(left)" torchrun --standalone --nproc_per_node "$n" bench/train.py \
        --configs bair64 --precision bf16 --layout cl --mode eager --cycles 20 --warmup 3 --distributed "$dist" \
        --batch $((8 * n)) 2>&1 | grep -E "^\||rror|Traceback" | tail -3
      cp bench/RESULTS.md "$OUT"/
    done
  done
fi

if [ "$phase" = t ]; then  # one GPU: 64 px end to end vs step (about 6 min)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  config=${2:-bair64}
  timeout 580 python3 bench/train_e2e.py --config "$config" --precision bf16+penalty --layout cl --mode graphed \
    --pack 4096 --workers 6 --kimg 24 --skip-kimg 4 --snapshot-kimg 4 --sample-kimg 16 --tick-kimg 4 \
    --work "$W/e2e" --json "$OUT/e2e-$config.json" 2>&1 | grep -Ev "it/s|kimg/s|WARNING"
  grep -h "warm-up\|eager 1" "$W"/e2e/step-*.log
  grep -h "CUDA graph captured\|kimg .* time:" "$W"/e2e/train-*.log | tail -8
  cp bench/RESULTS.md "$OUT"/
fi
if [ "$phase" = u ]; then  # one GPU: 128 px end to end vs step (about 9 min: ~3 min of warm-up in each process)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  config=${2:-sky128}
  timeout 590 python3 bench/train_e2e.py --config "$config" --precision bf16+penalty --layout cl --mode graphed \
    --pack 1024 --workers 8 --kimg 3 --skip-kimg 0.5 --snapshot-kimg 1 --sample-kimg 2 --tick-kimg 0.5 \
    --step-cycles 6 --step-warmup 3 --work "$W/e2e" --json "$OUT/e2e-$config.json" 2>&1 \
    | grep -Ev "it/s|kimg/s|WARNING"
  grep -h "warm-up\|eager 1" "$W"/e2e/step-*.log
  grep -h "CUDA graph captured\|kimg .* time:" "$W"/e2e/train-*.log | tail -8
  cp bench/RESULTS.md "$OUT"/
fi
if [ "$phase" = v ]; then  # one GPU: 128 px warm-up with fewer cuDNN algorithms timed, then without autotuning
  t0=$(date +%s); deadline=$((t0 + ${SUITE_SECONDS:-580}))
  left() { echo $((deadline - $(date +%s))); }
  for set in train.cudnn_benchmark_limit=1 train.cudnn_benchmark=false; do
    timeout "$(left)" python3 bench/train.py --configs sky128 --precision bf16+penalty --layout cl --mode graphed \
      --cycles 6 --warmup 3 --set "$set" 2>&1 | grep -E "^\| sky|rror|warm-up|eager 1"
    cp bench/RESULTS.md "$OUT"/
  done
fi
if [ "$phase" = r ]; then  # one multi-GPU host: weak scaling of the trainer end to end and of the step
  runtime=${2:-ddp}; counts=${3:-1,$(nvidia-smi -L | wc -l)}
  layout=cl; [ "$runtime" = deepspeed ] && layout=nchw  # DeepSpeed needs contiguous (NCHW) weights
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  timeout 590 python3 bench/train_e2e.py --config bair64 --precision bf16 --layout "$layout" --mode eager \
    --gpus "$counts" --distributed "$runtime" --reading global,per_rank --pack 8192 --shard-samples 128 --workers 6 \
    --kimg 2.4 --skip-kimg 0.6 --snapshot-kimg 0.6 --sample-kimg 1.2 --tick-kimg 0.6 --step-cycles 15 --step-warmup 2 \
    --work "$W/scale-$runtime" --json "$OUT/scale-$runtime-${counts//,/-}.json" 2>&1 | grep -Ev "it/s|kimg/s|WARNING"
  cp bench/RESULTS.md "$OUT"/
fi

if [ "$phase" = b ]; then
  export CUDA_VISIBLE_DEVICES=0,1
  for dist in ddp deepspeed; do
    python3 bench/train.py --configs bair64 --precision bf16 --mode eager --cycles 20 --warmup 3 --distributed "$dist" --batch 8 2>&1 | grep -E "^\||rror|Traceback"
    torchrun --standalone --nproc_per_node 2 bench/train.py --configs bair64 --precision bf16 --mode eager \
      --cycles 20 --warmup 3 --distributed "$dist" --batch 16 2>&1 | grep -E "^\||rror|Traceback"
  done
  echo "waiting for the training runs"; while pgrep -f "vsyn train bair64" > /dev/null; do sleep 5; done
  for f in "$W"/train-*.log; do echo "== $f"; tail -c 400 "$f"; echo; done
  export CUDA_VISIBLE_DEVICES=0,1,2,3
  for dist in ddp deepspeed; do
    torchrun --standalone --nproc_per_node 4 bench/train.py --configs bair64 --precision bf16 --mode eager \
      --cycles 20 --warmup 3 --distributed "$dist" --batch 32 2>&1 | grep -E "^\||rror|Traceback"
  done
  # equal training budget: each run's checkpoint at the largest kimg that both runs reached
  mapfile -t ckpts < <(python3 - "$W/run-style_rnn" "$W/run-dvdgan" <<'PY'
import json, sys
from pathlib import Path
runs = [{json.loads((d / "meta.json").read_text())["kimg"]: d for d in Path(r, "checkpoints").glob("ckpt-*")
         if (d / "COMPLETE").exists()} for r in sys.argv[1:]]
budget = min(max(r) for r in runs)
for r in runs:
    print(r[max(k for k in r if k <= budget)])
PY
  )
  echo "motion benchmark at equal budget: ${ckpts[*]}"
  CUDA_VISIBLE_DEVICES=0 python3 bench/motion.py "${ckpts[@]}" --data procedural:256 --size 64 --frames 25 2>&1 | tail -12
  for gen in style_rnn dvdgan; do
    cp "$W/run-$gen/logs/stats.jsonl" "$OUT/stats-$gen.jsonl"
    last=$(ls "$W/run-$gen/samples/"*.gif | sort | tail -1); cp "$last" "$OUT/samples-$gen.gif"
    grep -E "kimg|resumed|preempt|saved|exiting" "$W/train-$gen.log" | tail -3
  done
  cp bench/RESULTS.md "$OUT"/
  ls -la "$OUT"
fi

if [ "$phase" = c ]; then  # the short form of b for a short GPU window: 2-GPU scaling, then collect
  export CUDA_VISIBLE_DEVICES=0,1
  for dist in ddp deepspeed; do
    python3 bench/train.py --configs bair64 --precision bf16 --mode eager --cycles 15 --warmup 3 \
      --distributed "$dist" --batch 8 2>&1 | grep -E "^\||rror"
    torchrun --standalone --nproc_per_node 2 bench/train.py --configs bair64 --precision bf16 --mode eager \
      --cycles 15 --warmup 3 --distributed "$dist" --batch 16 2>&1 | grep -E "^\||rror"
  done > "$W/scaling.log" 2>&1
  cp bench/RESULTS.md "$W/RESULTS.md"
  while pgrep -f "[v]syn train bair64" > /dev/null; do sleep 5; done
  python3 - "$W" "$OUT" <<'PY'
import json, shutil, sys, tarfile
from pathlib import Path
w, out = Path(sys.argv[1]), Path(sys.argv[2])
runs = {}
for gen in ("style_rnn", "dvdgan"):
    ck = {json.loads((d / "meta.json").read_text())["kimg"]: d for d in (w / f"run-{gen}" / "checkpoints").glob("ckpt-*")
          if (d / "COMPLETE").exists()}
    runs[gen] = ck
budget = min(max(c) for c in runs.values())
with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
    for gen, ck in runs.items():
        d = ck[max(k for k in ck if k <= budget)]  # equal training budget
        shutil.copy(d / "generator_ema.safetensors", out / f"{gen}.safetensors")
        for name in ("config.json", "meta.json"):
            tar.add(d / name, f"{gen}/{name}")
        tar.add(w / f"run-{gen}" / "logs" / "stats.jsonl", f"{gen}/stats.jsonl")
        tar.add(sorted((w / f"run-{gen}" / "samples").glob("*.gif"))[-1], f"{gen}/samples-last.gif")
        tar.add(w / f"train-{gen}.log", f"{gen}/train.log")
        print(gen, "final kimg", max(ck), "equal-budget checkpoint", d.name, "kimg", max(k for k in ck if k <= budget))
    tar.add(w / "scaling.log", "scaling.log")
    tar.add(w / "RESULTS.md", "RESULTS.md")
PY
  cat "$W/scaling.log"
fi
