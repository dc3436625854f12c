#!/usr/bin/env bash
# Evaluation on a Slurm cluster: one task per GPU.
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
exec "$(dirname "$0")/_launch.sh" slurm "$PARTITION" "$JOB_NAME" test.py "$CONFIG" "$CHECKPOINT" "$@"
