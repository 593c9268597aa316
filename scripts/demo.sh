#!/usr/bin/env bash
# The main job on the embedded procedural dataset, end to end on CPU: pack shards -> train the motion head ->
# animate a larger held-out landscape at its own size (video + contact sheet) -> export .mar -> serve it -> one request.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${VSYN_DEMO_OUT:-demo-out}
CLIPS=${VSYN_DEMO_CLIPS:-512}
SIDE=${VSYN_DEMO_SIDE:-512}
KIMG=${VSYN_DEMO_KIMG:-2}  # ~3 minutes on a 2-core CPU (10-12 clips/s); the preset's 10 kimg take ~16
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "1/6 pack $CLIPS procedural scenes (32 px, 9 frames) into WebDataset shards"
vsyn shards pack procedural "$OUT/shards" --clips "$CLIPS" --size 32 --frames 9 --seed 0

step "2/6 train the tiny-motion model for $KIMG kimg: it predicts how the picture moves (resumes if a checkpoint exists)"
vsyn train tiny-motion data.train="$OUT/shards" train.run_dir="$OUT/run" train.total_kimg="$KIMG"

step "3/6 animate a held-out ${SIDE}x${SIDE} landscape at its own size (the model sees it at 32 px)"
python - "$OUT/input.png" "$SIDE" <<'PY'
import sys
from PIL import Image
from shards.procedural import clip_seed, make_clip
# a held-out scene: test seeds are never packed for training
Image.fromarray(make_clip(clip_seed(0, 2, "test"), int(sys.argv[2]), 2)["video"][0]).save(sys.argv[1])
PY
vsyn animate "$OUT/run" "$OUT/input.png" -o "$OUT/animate.mp4" --frames 25 --seed 1 --sheet "$OUT/contact-sheet.png"
# The same scene by the committed study model (motion64, 40 kimg on one GPU): a few CPU minutes teach the tiny model
# little beyond keeping the ground still; this one also moves the sky.
vsyn animate bench/models/motion64 "$OUT/input.png" -o "$OUT/study-model.mp4" --frames 25 --seed 1 \
    --sheet "$OUT/study-model-sheet.png"
vsyn animate bench/models/motion64 "$OUT/input.png" -o "$OUT/study-model-loop.mp4" --frames 25 --seed 1 --loop

step "4/6 export a TorchServe archive"
vsyn export "$OUT/run" --model-store "$OUT/model-store" --name vsyn

step "5/6 serve it and send one request (the photo comes back animated at its own size)"
vsyn serve stop --run-dir "$OUT/serve" >/dev/null 2>&1 || true
# The nginx front when it is installed (sudo serve/install-nginx); TorchServe alone otherwise (fine on loopback).
FRONT=nginx; command -v nginx >/dev/null || FRONT=none
vsyn serve start --model-store "$OUT/model-store" --run-dir "$OUT/serve" --front "$FRONT"
trap 'vsyn serve stop --run-dir "$OUT/serve" >/dev/null 2>&1 || true' EXIT
python - "$OUT" <<'PY'
import pathlib, sys
from serve.client import VsynClient
from serve.config import ServerSettings
out = pathlib.Path(sys.argv[1])
client = VsynClient(ServerSettings.load(out / "serve"))  # reads the token from the run dir's key_file.json
resp = client.predict((out / "input.png").read_bytes(), content_type="image/png", frames=25, seed=1, format="mp4")
resp.raise_for_status()
(out / "served.mp4").write_bytes(resp.content)
from vsyn.video import decode_video
frames = decode_video(resp.content)
print(f"served {resp.headers.get('Content-Type')}: {len(resp.content)} bytes, {frames.shape[0]} frames of "
      f"{frames.shape[2]}x{frames.shape[1]}, seed {resp.headers.get('X-Vsyn-Seed')}")
PY
vsyn serve stop --run-dir "$OUT/serve"
trap - EXIT

step "6/6 done"
echo "video (served by TorchServe): $(pwd)/$OUT/served.mp4"
echo "video (vsyn animate):         $(pwd)/$OUT/animate.mp4"
echo "contact sheet:                $(pwd)/$OUT/contact-sheet.png  (frames 0 / 12 / 24, then 4x |24 - 0|)"
echo "the committed study model:    $(pwd)/$OUT/study-model.mp4, $OUT/study-model-loop.mp4 (seamless loop),"
echo "                              $OUT/study-model-sheet.png"
echo "training samples and logs:    $(pwd)/$OUT/run"
