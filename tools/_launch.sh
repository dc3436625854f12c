#!/usr/bin/env bash
# Shared by dist_{train,test}.sh and slurm_{train,test}.sh: the interpreter, the usage text and the
# launch of a tool on several processes.
#   tools/_launch.sh torchrun GPUS TOOL.py ARGS...      (NNODES, NODE_RANK, MASTER_ADDR, PORT)
#   tools/_launch.sh slurm PARTITION JOB_NAME TOOL.py ARGS...
#                                  (GPUS, GPUS_PER_NODE, GRES, CPUS_PER_TASK, SRUN_ARGS)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-$HERE/../.venv/bin/python}"
[[ -x "$PY" ]] || PY=python
export PYTHONPATH="$HERE/..:${PYTHONPATH:-}"

TORCHRUN_ENV='Environment (torchrun launchers):
  CUDA_VISIBLE_DEVICES  which GPUs of this machine to use, e.g. 0,1,2,3 (default: all); GPUS
                        must not exceed the number listed. Without a GPU the processes run on CPU
                        (gloo backend).
  NNODES                number of machines taking part (default 1)
  NODE_RANK             index of this machine, 0 .. NNODES-1 (default 0); run the same command on
                        every machine, changing only NODE_RANK
  MASTER_ADDR           address of the machine with NODE_RANK=0, reachable from all (default
                        127.0.0.1)
  PORT                  free TCP port on that machine (default 29500); change it to run two jobs
                        on one machine
  PYTHON                interpreter (default .venv/bin/python, else python on PATH)'
SLURM_ENV='Environment (Slurm launchers):
  GPUS                  total number of GPUs (= tasks) for the job (default 8)
  GPUS_PER_NODE         GPUs (= tasks) per node (default 8); nodes used = GPUS / GPUS_PER_NODE
  GRES                  generic resources per node, srun --gres (default gpu:GPUS_PER_NODE).
                        On a CPU cluster set it empty (GRES=): no --gres, the tasks run on
                        CPU (gloo) and GPUS / GPUS_PER_NODE count tasks
  CPUS_PER_TASK         CPU cores per task (default 5: at most 4 data loader workers in every
                        config, plus the main process); for more workers raise it together
                        with --cfg-options train_dataloader.num_workers=CPUS_PER_TASK-1
  SRUN_ARGS             extra srun options, e.g. "--quotatype=spot" or "--time=72:00:00"
  SIGNAL_LEAD           slurm_train.sh run outside an allocation: seconds before the time
                        limit at which Slurm sends SIGUSR1 to every task, which saves and exits
                        75 (srun --signal; default 120; 0: none). Inside an sbatch job srun
                        cannot ask for it: submit with sbatch --signal=USR1@SECONDS instead
  REQUEUE               slurm_train.sh inside an sbatch job: 1 requeues the job when the run
                        stops on a preemption signal (exit 75); a requeued job adds --resume
  MASTER_PORT           TCP port of the process group on the first node (default 29500); set a
                        free one when two jobs share a node
  OMP_NUM_THREADS       threads per task (default 1, as torchrun sets it)
  PYTHON                interpreter (default .venv/bin/python, else python on PATH)
Slurm chooses the GPUs: CUDA_VISIBLE_DEVICES is set by Slurm for each task.'

# usage_or_die MIN_ARGS USAGE_TEXT ENV_TEXT -- ARGS...: prints usage and exits when one of the
# first MIN_ARGS arguments is -h/--help (status 0) or there are fewer than MIN_ARGS (status 2).
usage_or_die() {
  local min=$1 text=$2 env=$3 arg
  shift 4
  for arg in "${@:1:$min}"; do
    if [[ $arg == -h || $arg == --help ]]; then
      printf '%s\n\n%s\n' "$text" "$env"
      exit 0
    fi
  done
  if [[ $# -lt $min ]]; then
    printf 'error: expected at least %d arguments, got %d\n\n%s\n\n%s\n' "$min" "$#" "$text" "$env" >&2
    exit 2
  fi
}

# positive_int NAME VALUE: exits with a message unless VALUE is a positive integer.
positive_int() {
  if ! [[ $2 =~ ^[1-9][0-9]*$ ]]; then
    echo "error: $1 must be a positive integer, got '$2'" >&2
    exit 2
  fi
}

# config_exists PATH: exits with a message unless PATH is a file, before torchrun or srun start.
config_exists() {
  if [[ ! -f $1 ]]; then
    echo "error: config file not found: $1" >&2
    exit 2
  fi
}

# Only run the launch when executed; dist_*.sh and slurm_*.sh source this file for the helpers.
[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0

LAUNCH_USAGE="usage: tools/_launch.sh torchrun GPUS TOOL.py [ARGS...]
       tools/_launch.sh slurm PARTITION JOB_NAME TOOL.py [ARGS...]
The common back end of tools/dist_{train,test}.sh and tools/slurm_{train,test}.sh (use those);
TOOL.py is a script in tools/ (train.py or test.py), ARGS are passed to it."
MODE=${1:-}
[[ $# -gt 0 ]] && shift
case "$MODE" in
  torchrun)
    usage_or_die 2 "$LAUNCH_USAGE" "$TORCHRUN_ENV" -- "$@"
    GPUS=$1
    TOOL=$2
    shift 2
    positive_int GPUS "$GPUS"
    for var in NNODES NODE_RANK PORT; do
      [[ -z ${!var:-} ]] || [[ ${!var} =~ ^[0-9]+$ ]] || {
        echo "error: $var must be an integer, got '${!var}'" >&2; exit 2; }
    done
    # the machine of NODE_RANK 0 hosts the rendezvous on PORT: a taken port fails every rank
    if [[ ${NODE_RANK:-0} == 0 ]] && (exec 3<>"/dev/tcp/127.0.0.1/${PORT:-29500}") 2>/dev/null
    then
      echo "error: PORT ${PORT:-29500} is taken on this machine (another run?): choose a free" \
           "one, e.g. PORT=$(( ${PORT:-29500} + 1 )) tools/dist_train.sh ..." >&2
      exit 2
    fi
    # Preemption: SIGTERM or SIGUSR1 sent to this script is passed on to every rank (train.py
    # saves and exits 75); torchrun ignores SIGUSR1, whose default action would kill it and
    # orphan the ranks. A training whose torchrun fails after that exits 75 here.
    # tools/_torchrun.py is torchrun whose failed rank ends the launch in one line, with the
    # rank's exit status (torchrun's own: a traceback and status 1).
    ( trap '' USR1; exec "$PY" "$HERE/_torchrun.py" \
        --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" \
        --nproc_per_node="$GPUS" "$HERE/$TOOL" "$@" --launcher pytorch ) &
    RUN=$!
    FORWARDED=0
    forward() { FORWARDED=1; pkill "-$1" -P "$RUN" || :; }   # no rank left: nothing to stop
    trap 'forward TERM' TERM
    trap 'forward USR1' USR1
    while kill -0 "$RUN" 2>/dev/null; do wait "$RUN" || :; done   # a trapped signal ends `wait`
    wait "$RUN" && STATUS=0 || STATUS=$?
    if [[ $TOOL == train.py && $FORWARDED == 1 && $STATUS != 0 ]]; then STATUS=75; fi
    exit "$STATUS" ;;
  slurm)
    usage_or_die 3 "$LAUNCH_USAGE" "$SLURM_ENV" -- "$@"
    PARTITION=$1
    JOB_NAME=$2
    TOOL=$3
    shift 3
    GPUS_PER_NODE=${GPUS_PER_NODE:-8}
    positive_int GPUS "${GPUS:-8}"
    positive_int GPUS_PER_NODE "$GPUS_PER_NODE"
    positive_int CPUS_PER_TASK "${CPUS_PER_TASK:-5}"
    if ! command -v srun >/dev/null; then
      echo "error: srun not found: this machine is not a Slurm login node (or Slurm is not on" \
           "PATH). Without Slurm use tools/dist_train.sh / tools/dist_test.sh." >&2
      exit 127
    fi
    # torchrun's default: without it every CPU task starts a thread per core (srun does not
    # bind tasks to cores here), and the ranks' threads fight over the cores
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    GRES=${GRES-gpu:$GPUS_PER_NODE}   # unset: GPUs; set empty: a CPU cluster
    GRES_ARGS=()
    [[ -z $GRES ]] || GRES_ARGS=(--gres="$GRES")
    exec srun -p "$PARTITION" --job-name="$JOB_NAME" "${GRES_ARGS[@]}" \
        --ntasks="${GPUS:-8}" --ntasks-per-node="$GPUS_PER_NODE" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
        "$PY" -u "$HERE/$TOOL" "$@" --launcher slurm ;;
  -h|--help)
    printf '%s\n\n%s\n\n%s\n' "$LAUNCH_USAGE" "$TORCHRUN_ENV" "$SLURM_ENV"
    exit 0 ;;
  *)
    printf 'error: the first argument must be torchrun or slurm, got %s\n\n%s\n' \
        "'$MODE'" "$LAUNCH_USAGE" >&2
    exit 2 ;;
esac
