#!/usr/bin/env bash
# The motion head on one GPU, in calls that fit a 10-minute command limit. Each phase appends its tables to
# bench/RESULTS.md and copies that file (and what else the phase keeps) to $OUT.
#
#   bash bench/gpu_motion.sh speed     # training step, pixel vs motion head, both presets (graphed), and at
#                                      # batch $SCALE_BATCH at 64 px; full-resolution animation unless NO_ANIMATE=1
#   bash bench/gpu_motion.sh pack      # the study's train + held-out shards (skipped when present)
#   bash bench/gpu_motion.sh study     # pack, then start the arms' 64 px trainings side by side (detached)
#   bash bench/gpu_motion.sh queue     # pack, then train the arms one after another (detached): one process on the
#                                      # GPU at a time, the next started $QUEUE_OVERLAP_KIMG before the last one ends
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
if ! python3 -c 'import importlib.metadata as m; m.distribution("vsyn")' 2> /dev/null &&
   [ ! -d /tmp/site/vsyn_checkout-0.dist-info ]; then  # the project's entry points (vsyn shards ...), not installed
  mkdir -p /tmp/site/vsyn_checkout-0.dist-info
  printf 'Metadata-Version: 2.1\nName: vsyn-checkout\nVersion: 0\n' > /tmp/site/vsyn_checkout-0.dist-info/METADATA
  python3 -c 'import tomllib; eps = tomllib.load(open("pyproject.toml", "rb"))["project"]["entry-points"]
for group, items in eps.items():
    print(f"[{group}]"); [print(f"{k} = {v}") for k, v in items.items()]' \
    > /tmp/site/vsyn_checkout-0.dist-info/entry_points.txt
fi
vsyn() { python3 -m vsyn "$@"; }
# Anchored to the start of a command line, so that a caller's shell whose command text merely mentions them is not
# taken for (or stopped as) a training or the queue
TRAINING='^python3 -m vsyn train ' QUEUE='^bash [^ ]*gpu_motion.sh queue-run'
# The study: four arms at 64 px (the motion head as preset and trained with reconstruction through its motion
# encoder, the adversarial terms ramped in over 10 kimg; style2, DVD-GAN-S), same data, same settings, on one GPU
# (`study`: side by side; `queue`: one after another), motion metrics on the held-out scenes at every snapshot;
# compared at the smallest kimg all of them reached. An arm is NAME:PRESET:OVERRIDES, overrides separated by commas.
REC=model.motion_encoder=true,loss.reconstruction=100,loss.adversarial_warmup_kimg=10,model.gru_seed=tanh
read -r -a STUDY <<< "${STUDY_ARMS:-motion:motion64: motion-rec:motion64:$REC style2:bair64: dvdgan:bair64:model.generator=dvdgan}"
MOTION_ARMS=(); for entry in "${STUDY[@]}"; do  # arms whose preset is a motion head's
  IFS=: read -r name preset _ <<< "$entry"; [[ $preset == *motion* ]] && MOTION_ARMS+=("$name"); done
STUDY_SECONDS=${STUDY_SECONDS:-720}
STUDY_ARGS=(train.precision=bf16 loss.penalty_precision=autocast train.channels_last=true train.cuda_graphs=true
            train.total_kimg=200 train.tick_kimg=2 train.snapshot_kimg=6 train.sample_kimg=12 train.keep_last=2
            train.log_every=20 data.workers=4 eval.metrics=motion eval.n=64)
# a small CPU rehearsal of the same phases: STUDY_SIZE=32 STUDY_FRAMES=9 STUDY_CLIPS=64 STUDY_TEST_CLIPS=16 and CPU
# overrides in STUDY_EXTRA (train.cuda_graphs=false model.resolution=32 ...)
SIZE=${STUDY_SIZE:-64}; FRAMES=${STUDY_FRAMES:-25}; TEST_CLIPS=${STUDY_TEST_CLIPS:-256}
read -r -a EXTRA <<< "${STUDY_EXTRA:-}"

if [ "$phase" = speed ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  timeout 250 python3 bench/train.py --configs bair64,motion64 --precision bf16+penalty --layout cl --mode graphed \
    --cycles 30 --warmup 3 2>&1 | grep -E "^\||rror|Traceback"
  timeout 240 python3 bench/train.py --configs sky128,motion128 --precision bf16+penalty --layout cl --mode graphed \
    --cycles 12 --warmup 3 2>&1 | grep -E "^\||rror|Traceback"
  if [ -n "${SCALE_BATCH:-}" ]; then  # does a larger batch buy throughput at 64 px? (the study's budget)
    timeout 200 python3 bench/train.py --configs bair64,motion64 --precision bf16+penalty --layout cl --mode graphed \
      --batch "$SCALE_BATCH" --cycles 20 --warmup 3 2>&1 | grep -E "^\||rror|Traceback"
  fi
  if [ -z "${NO_ANIMATE:-}" ]; then
    timeout 120 python3 bench/animate.py --device cuda --config motion128 --sizes 1920x1080 --frames 25 \
      --precision fp32,bf16 --loop off,on --repeats 7 2>&1 | grep -E "^\||rror|Traceback"
  fi
  cp bench/RESULTS.md "$OUT"/
fi

pack() {  # the study's shards, once per machine
  [ -f "$W/p64/manifest.json" ] || vsyn shards pack procedural "$W/p64" --clips "${STUDY_CLIPS:-8192}" --size "$SIZE" \
    --frames "$FRAMES" --workers ${PACK_WORKERS:-16} --seed 0 | tail -1
  [ -f "$W/p64-test/manifest.json" ] || vsyn shards pack procedural "$W/p64-test" --clips "$TEST_CLIPS" --size "$SIZE" \
    --frames "$FRAMES" --workers ${PACK_WORKERS:-16} --split test | tail -1
}
[ "$phase" = pack ] && pack

train_arm() {  # NAME:PRESET:OVERRIDES -> a detached training; prints its pid
  IFS=: read -r name preset extra <<< "$1"
  IFS=, read -r -a overrides <<< "$extra"
  # SIGTERM at the deadline: the trainer saves a full checkpoint and exits 3 (the preemption path)
  setsid timeout -s TERM "$STUDY_SECONDS" python3 -m vsyn train "$preset" "${overrides[@]}" \
    data.train="$W/p64" data.val="$W/p64-test" train.run_dir="$W/run-$name" "${STUDY_ARGS[@]}" "${EXTRA[@]}" \
    > "$W/train-$name.log" 2>&1 < /dev/null &
  echo $!
}

if [ "$phase" = study ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  pack
  for entry in "${STUDY[@]}"; do echo "training $entry, pid $(train_arm "$entry")"; done
  sleep 60; tail -n 3 "$W"/train-*.log
fi

if [ "$phase" = queue ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  pack
  setsid bash "$0" queue-run > "$W/queue.log" 2>&1 < /dev/null &
  sleep 45; cat "$W/queue.log"; tail -n 2 "$W"/train-*.log
fi

if [ "$phase" = queue-run ]; then  # time-slicing one GPU between trainings costs throughput: one at a time
  total=200; for a in "${STUDY_ARGS[@]}" "${EXTRA[@]}"; do [[ $a == train.total_kimg=* ]] && total=${a#*=}; done
  next_at=$(python3 -c "print($total - ${QUEUE_OVERLAP_KIMG:-2})")
  for entry in "${STUDY[@]}"; do
    name=${entry%%:*}; pid=$(train_arm "$entry"); echo "$(date -u +%T) training $entry, pid $pid"
    stats="$W/run-$name/logs/stats.jsonl"
    while kill -0 "$pid" 2> /dev/null; do  # the next one starts (data workers, graph capture) while this one ends
      sleep 5
      [ -f "$stats" ] && tail -n 1 "$stats" |
        python3 -c "import json, sys; sys.exit(json.load(sys.stdin)['kimg'] < $next_at)" 2> /dev/null && break
    done
  done
  while pgrep -f "$TRAINING" > /dev/null; do sleep 5; done; echo "$(date -u +%T) all done"
fi

if [ "$phase" = wait ]; then  # progress, and hold the machine until the runs end or ${WAIT_SECONDS}
  end=$(( $(date +%s) + ${WAIT_SECONDS:-540} ))
  while pgrep -f "$TRAINING|$QUEUE" > /dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 10; done
  cat "$W/queue.log" 2> /dev/null
  for f in "$W"/train-*.log; do echo "== $f"; tr "\r" "\n" < "$f" | grep -E "^kimg|metrics at|rror" | tail -n 2; done
fi

if [ "$phase" = collect ]; then
  if [ "${COLLECT_STOP:-0}" = 1 ]; then  # out of time: stop the queue and the trainings (each saves a checkpoint)
    pkill -f "$QUEUE"; pkill -TERM -f "$TRAINING"
  fi
  while pgrep -f "$TRAINING" > /dev/null; do sleep 5; done
  E="$W/eval"; mkdir -p "$E"
  names=(); for entry in "${STUDY[@]}"; do names+=("${entry%%:*}"); done
  # FINAL_EVAL=0: no 256-scene evaluations here (they run elsewhere from the weights brought back); the curves'
  # reference lines then come from REFERENCE_DIR's copy-frame0.json / true-clip-mp4.json (same scenes)
  if [ "${FINAL_EVAL:-1}" = 1 ]; then
    for ref in copy-frame0 true-clip true-clip-mp4; do
      [ -f "$E/$ref/metrics.json" ] || vsyn eval "$ref" --data "$W/p64-test" --metrics motion,psnr \
        --n "$TEST_CLIPS" --frames "$FRAMES" --out "$E/$ref" > "$E/$ref.log" 2>&1 || tail -n 5 "$E/$ref.log"
    done
  fi
  budget=$(python3 - "$W" "${names[@]}" <<'PY'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
last = [max(json.loads((d / "meta.json").read_text())["kimg"] for d in (w / f"run-{n}" / "checkpoints").glob("ckpt-*"))
        for n in sys.argv[2:]]
print(min(last))
PY
)
  echo "equal budget: $budget kimg"
  if [ "${FINAL_EVAL:-1}" = 1 ]; then
    for name in "${names[@]}"; do
      vsyn eval "$W/run-$name" --data "$W/p64-test" --metrics motion,psnr --n "$TEST_CLIPS" \
        --out "$E/$name-final" > "$E/$name.log" 2>&1 || tail -n 5 "$E/$name.log"
    done
  fi
  refs=(--reference "copy frame 0=$E/copy-frame0/metrics.json" --reference "true clip (mp4)=$E/true-clip-mp4/metrics.json")
  [ -n "${REFERENCE_DIR:-}" ] && refs=(--reference "copy frame 0=$REFERENCE_DIR/copy-frame0.json"
                                      --reference "true clip (mp4)=$REFERENCE_DIR/true-clip-mp4.json")
  curves=(); for name in "${names[@]}"; do curves+=("$name=$W/run-$name"); done
  python3 bench/plot_curves.py "${curves[@]}" -o "$OUT/study-curves.png" "${refs[@]}" 2>&1 | tail -n 2
  # weights as generation needs them: without the motion encoder (reconstruction arms), which would take a
  # motion64 file past the 16 MiB a file can bring back (17.8 MiB with it, 15.3 without)
  slim() { python3 -c 'import sys; from safetensors.torch import load_file, save_file
from vsyn.inference import inference_state; save_file(inference_state(load_file(sys.argv[1])), sys.argv[2])' "$1" "$2"; }
  declare -A best_of=()
  for name in "${MOTION_ARMS[@]}"; do  # each motion arm's best snapshot (by motion_score), weights apart
    best="$W/run-$name/checkpoints/best-motion_score"
    [ -d "$best" ] || best=$(ls -d "$W/run-$name"/checkpoints/ckpt-* | tail -n 1)
    slim "$best/generator_ema.safetensors" "$OUT/$name-ema.safetensors"
    best_of[$name]=$best
    mkdir -p "$W/best-$name"; cp "$best/config.json" "$best/meta.json" "$W/best-$name/"
  done
  if [ "${ALL_WEIGHTS:-0}" = 1 ]; then  # every arm's newest EMA weights too (final rows made elsewhere)
    for name in "${names[@]}"; do
      last=$(ls -d "$W/run-$name"/checkpoints/ckpt-* | tail -n 1)
      cmp -s "$last/generator_ema.safetensors" "${best_of[$name]:-/nonexistent}/generator_ema.safetensors" ||
        slim "$last/generator_ema.safetensors" "$OUT/$name-last-ema.safetensors"
    done
  fi
  tar -czf "$OUT/study.tar.gz" -C "$W" eval best-* $(cd "$W" && ls -d run-*/logs/stats.jsonl run-*/config.json \
    run-*/checkpoints/*/meta.json train-*.log 2>/dev/null) \
    $(cd "$W" && for r in run-*; do ls -d "$r"/samples/* 2>/dev/null | tail -n 1; done)
  cp bench/RESULTS.md "$OUT"/
  for n in copy-frame0 true-clip true-clip-mp4 "${names[@]/%/-final}"; do
    echo "== $n"; head -c 1500 "$E/$n/metrics.json" 2>/dev/null; echo
  done
fi
