#!/usr/bin/env bash
# Evaluation on a Slurm cluster, one task per GPU; run with --help for the arguments and environment.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
usage_or_die 4 "usage: [GPUS=8] [GPUS_PER_NODE=8] [GRES=gpu:8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \\
    tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]

Evaluates CHECKPOINT with CONFIG on GPUS GPUs of a Slurm cluster (srun, one task per GPU).
  PARTITION   the Slurm partition to submit to (sinfo lists them)
  JOB_NAME    a name for the job, shown by squeue
  CONFIG      the config the checkpoint was trained with
  CHECKPOINT  a checkpoint written by tools/train.py
  test.py args, e.g. --work-dir DIR, --out-metrics FILE.json" "$SLURM_ENV" -- "$@"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
config_exists "$CONFIG"
exec "$(dirname "$0")/_launch.sh" slurm "$PARTITION" "$JOB_NAME" test.py "$CONFIG" "$CHECKPOINT" "$@"
