#!/usr/bin/env bash
# Multi-process evaluation with torchrun; run with --help for the arguments and environment.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
usage_or_die 3 "usage: [CUDA_VISIBLE_DEVICES=...] [NNODES=1 NODE_RANK=0 MASTER_ADDR=... PORT=29500] \\
    tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]

Evaluates CHECKPOINT with CONFIG on GPUS processes on this machine (one per GPU; CPU processes
on the gloo backend when no GPU is present), through torchrun.
  CONFIG      the config the checkpoint was trained with
  CHECKPOINT  a checkpoint written by tools/train.py (e.g. \"\$(cat WORK_DIR/last_checkpoint)\")
  GPUS        processes (GPUs) per machine
  test.py args, e.g. --work-dir DIR, --out-metrics FILE.json, --show-dir DIR
            (see .venv/bin/python tools/test.py --help)" "$TORCHRUN_ENV" -- "$@"
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
config_exists "$CONFIG"
if [[ -z $CHECKPOINT ]]; then
  echo 'error: CHECKPOINT is empty (a "$(cat WORK_DIR/last_checkpoint)" that found no file?):' \
       'give the path of a checkpoint written by tools/train.py' >&2
  exit 2
fi
[[ -f $CHECKPOINT ]] || { echo "error: checkpoint not found: $CHECKPOINT" >&2; exit 2; }
exec "$(dirname "$0")/_launch.sh" torchrun "$GPUS" test.py "$CONFIG" "$CHECKPOINT" "$@"
