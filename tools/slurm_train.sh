#!/usr/bin/env bash
# Training on a Slurm cluster, one task per GPU; run with --help for the arguments and environment.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
usage_or_die 3 "usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \\
    tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]

Trains CONFIG on GPUS GPUs of a Slurm cluster (srun, one task per GPU). Run it on a login node.
  PARTITION  the Slurm partition to submit to (sinfo lists them)
  JOB_NAME   a name for the job, shown by squeue
  CONFIG     a config file
  WORK_DIR   optional output folder (default work_dirs/<config name>)
  train.py args, e.g. --amp, --resume, --cfg-options KEY=VALUE" "$SLURM_ENV" -- "$@"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
config_exists "$CONFIG"
WORK_DIR_ARGS=()
if [[ $# -gt 0 && $1 != --* ]]; then WORK_DIR_ARGS=(--work-dir "$1"); shift; fi
exec "$(dirname "$0")/_launch.sh" slurm "$PARTITION" "$JOB_NAME" train.py "$CONFIG" \
    "${WORK_DIR_ARGS[@]}" "$@"
