#!/usr/bin/env bash
# Multi-process training with torchrun; run with --help for the arguments and environment.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
usage_or_die 2 "usage: [CUDA_VISIBLE_DEVICES=...] [NNODES=1 NODE_RANK=0 MASTER_ADDR=... PORT=29500] \\
    tools/dist_train.sh CONFIG GPUS [train.py args...]

Trains CONFIG with GPUS processes on this machine (one per GPU; CPU processes on the gloo
backend when no GPU is present), through torchrun.
  CONFIG    a config file, e.g. configs/pretrain/mixedae_vit-base-p16_8xb512-coslr-300e_in1k.py
  GPUS      processes (GPUs) per machine; the total batch is GPUS x NNODES x the config's
            per-GPU batch (add --auto-scale-lr when it differs from the config's)
  train.py args, e.g. --work-dir DIR, --amp, --resume, --cfg-options KEY=VALUE
            (see .venv/bin/python tools/train.py --help)" "$TORCHRUN_ENV" -- "$@"
CONFIG=$1
GPUS=$2
shift 2
config_exists "$CONFIG"
exec "$(dirname "$0")/_launch.sh" torchrun "$GPUS" train.py "$CONFIG" "$@"
