#!/usr/bin/env bash
# Training on a Slurm cluster: one task per GPU.
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]
set -euo pipefail
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
WORK_DIR_ARGS=()
if [[ $# -gt 0 && $1 != --* ]]; then WORK_DIR_ARGS=(--work-dir "$1"); shift; fi
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-$HERE/../.venv/bin/python}"
[[ -x "$PY" ]] || PY=python

PYTHONPATH="$HERE/..:${PYTHONPATH:-}" srun -p "$PARTITION" --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PY" -u "$HERE/train.py" "$CONFIG" "${WORK_DIR_ARGS[@]}" --launcher slurm "$@"
