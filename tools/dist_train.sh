#!/usr/bin/env bash
# Multi-process training with torchrun: GPUS processes per node (CPU processes on gloo when no
# GPU is present). Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT.
#   tools/dist_train.sh CONFIG GPUS [train.py args...]
set -euo pipefail
CONFIG=$1
GPUS=$2
shift 2
exec "$(dirname "$0")/_launch.sh" torchrun "$GPUS" train.py "$CONFIG" "$@"
