#!/usr/bin/env bash
# One prepared GPU session (the `device` tool lends a GPU for minutes, not hours):
# train the bundled compact networks, then measure speed, memory and precision.
# Everything it produces lands in $OUT (8 files at most come back).
#
#   TRAIN_MINUTES=5 bash scripts/device_run.sh          # on the GPU machine
#   DEVICE=cpu TRAIN_MINUTES=0.2 SMALL=1 bash scripts/device_run.sh   # dry run here
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/device-out}
DEVICE=${DEVICE:-cuda}
MIN=${TRAIN_MINUTES:-5}
SMALL=${SMALL:-0}
mkdir -p "$OUT" /tmp/logs
log() { echo "[$(date +%T)] $*"; }

log "machine"
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv 2>/dev/null; nproc;
  python3 -c "import torch, typer, rich, PIL, cv2, safetensors, numpy; print(torch.__version__, torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())"; } | tee /tmp/logs/machine.txt

log "smoke: every task trains for 3 steps"
for t in derain deblur denoise; do
  python3 -m mprnet_cli train $t data/train --out /tmp/smoke-$t --width 16,8,8 --num-cab 1 --steps 3 \
    --batch 2 --crop 64 --save-every 3 --device "$DEVICE" --quiet || { log "SMOKE FAILED ($t)"; exit 1; }
done

if [ "$SMALL" = 1 ]; then BATCH=2; CROP=64; else BATCH=16; CROP=128; fi
train() { # name task width
  python3 -m mprnet_cli train "$2" data/train --out /tmp/run-$1 --width "$3" --num-cab 4 --steps 0 \
    --max-minutes "$MIN" --batch $BATCH --crop $CROP --lr 4e-4 --save-every 200 --seed 1 --device "$DEVICE" \
    --export "$OUT/$1.safetensors" > /tmp/logs/train-$1.log 2>&1
  log "train $1 exit $?"
}
log "training 4 networks in parallel for $MIN min"
train derain derain 32,16,12 &
train deblur deblur 32,16,12 &
train denoise denoise 32,16,12 &
train denoise24 denoise 24,12,8 &
wait
tail -n 2 /tmp/logs/train-*.log

if [ "$SMALL" = 1 ]; then SIZE=64x64; BIG=256x192; else SIZE=512x512; BIG=4000x3000; fi
log "bench"
timeout 120 python3 -m mprnet_cli bench derain denoise deblur --size $SIZE --device "$DEVICE" \
  --modes reference,fp32,bf16,fp16 --json > "$OUT/bench.jsonl" 2>/tmp/logs/bench.err
log "pipeline on a $BIG image"
[ "$DEVICE" = cuda ] && timeout 80 python3 benchmarks/gpu_pipeline.py --size $BIG --json "$OUT/gpu_pipeline.json" \
  > /tmp/logs/gpu_pipeline.log 2>&1
log "precision"
timeout 45 python3 benchmarks/precision_check.py --weights "$OUT"/*.safetensors --images data/samples \
  --device "$DEVICE" --size 384 --json "$OUT/precision.json" > /tmp/logs/precision.log 2>&1
tar czf "$OUT/logs.tgz" -C /tmp logs
log "compile"
timeout 60 python3 -m mprnet_cli bench derain --size $SIZE --device "$DEVICE" --modes bf16+compile --json \
  >> "$OUT/bench.jsonl" 2>/tmp/logs/compile.err
log "done"
tar czf "$OUT/logs.tgz" -C /tmp logs
