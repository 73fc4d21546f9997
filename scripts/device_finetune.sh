#!/usr/bin/env bash
# Second prepared GPU session: continue training the bundled networks from their
# first-session weights (runs/*.safetensors) with larger batches, in parallel.
#   TRAIN_MINUTES=3 bash scripts/device_finetune.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/device-out}
DEVICE=${DEVICE:-cuda}
MIN=${TRAIN_MINUTES:-3}
BATCH=${BATCH:-48}
CROP=${CROP:-128}
mkdir -p "$OUT" /tmp/logs
log() { echo "[$(date +%T)] $*"; }
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
tune() { # name task width init
  python3 -m mprnet_cli train "$2" data/train --out /tmp/ft-$1 --width "$3" --num-cab 4 --steps 0 \
    --max-minutes "$MIN" --batch "$BATCH" --crop "$CROP" --lr 2e-4 --warmup 50 --save-every 100 --seed 2 \
    --device "$DEVICE" --init "$4" --export "$OUT/$1.safetensors" > /tmp/logs/ft-$1.log 2>&1
  log "tune $1 exit $?"
}
tune derain derain 32,16,12 runs/derain.safetensors &
tune deblur deblur 32,16,12 runs/deblur.safetensors &
tune denoise24 denoise 24,12,8 runs/denoise24.safetensors &
wait
tail -n 2 /tmp/logs/ft-*.log
nvidia-smi --query-gpu=name,memory.used --format=csv 2>/dev/null
tar czf "$OUT/logs.tgz" -C /tmp logs
