#!/usr/bin/env bash
# Shared by dist_{train,test}.sh and slurm_{train,test}.sh: the interpreter and the launch of a
# tool on several processes.
#   tools/_launch.sh torchrun GPUS TOOL.py ARGS...      (NNODES, NODE_RANK, MASTER_ADDR, PORT)
#   tools/_launch.sh slurm PARTITION JOB_NAME TOOL.py ARGS...
#                                        (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-$HERE/../.venv/bin/python}"
[[ -x "$PY" ]] || PY=python
export PYTHONPATH="$HERE/..:${PYTHONPATH:-}"
MODE=$1
shift
case "$MODE" in
  torchrun)
    GPUS=$1
    TOOL=$2
    shift 2
    exec "$PY" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
        --nproc_per_node="$GPUS" "$HERE/$TOOL" "$@" --launcher pytorch ;;
  slurm)
    PARTITION=$1
    JOB_NAME=$2
    TOOL=$3
    shift 3
    GPUS_PER_NODE=${GPUS_PER_NODE:-8}
    exec srun -p "$PARTITION" --job-name="$JOB_NAME" \
        --gres=gpu:"$GPUS_PER_NODE" --ntasks="${GPUS:-8}" --ntasks-per-node="$GPUS_PER_NODE" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
        "$PY" -u "$HERE/$TOOL" "$@" --launcher slurm ;;
  *)
    echo "usage: $0 torchrun|slurm ..." >&2
    exit 2 ;;
esac
