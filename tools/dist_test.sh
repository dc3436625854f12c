#!/usr/bin/env bash
# Multi-process evaluation with torchrun (CPU processes on gloo when no GPU is present).
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT.
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args...]
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
exec "$(dirname "$0")/_launch.sh" torchrun "$GPUS" test.py "$CONFIG" "$CHECKPOINT" "$@"
