#!/usr/bin/env bash
# Training on a Slurm cluster, one task per GPU; run with --help for the arguments and environment.
set -euo pipefail
source "$(dirname "$0")/_launch.sh"
usage_or_die 3 "usage: [GPUS=8] [GPUS_PER_NODE=8] [GRES=gpu:8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \\
    [SIGNAL_LEAD=120] [REQUEUE=1] tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] \\
    [train.py args...]

Trains CONFIG on GPUS GPUs of a Slurm cluster (srun, one task per GPU). Run it on a login node.
  PARTITION  the Slurm partition to submit to (sinfo lists them)
  JOB_NAME   a name for the job, shown by squeue
  CONFIG     a config file
  WORK_DIR   optional output folder (default work_dirs/<config name>)
  train.py args, e.g. --amp, --resume, --cfg-options KEY=VALUE
Preemption: Slurm's SIGTERM (preemption) or SIGUSR1 (sent SIGNAL_LEAD seconds before the time
limit) makes every task finish its iteration, save a checkpoint and exit 75. Submitted with
sbatch --requeue --signal=USR1@120 --wrap 'exec tools/slurm_train.sh ...' and REQUEUE=1, the
job then requeues itself, and a requeued job (or one Slurm requeued after preempting it)
resumes from the work dir's last checkpoint. (Inside an sbatch job srun cannot ask for the
signal: sbatch --signal does, SIGNAL_LEAD must be left unset. exec makes this script the batch
shell, which outlives a SIGTERM Slurm sends the whole job. To stop a job so that it saves:
scancel --signal=TERM JOBID, without --full, whose SIGTERM to srun kills the tasks at once.)" \
    "$SLURM_ENV" -- "$@"
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
config_exists "$CONFIG"
WORK_DIR_ARGS=()
if [[ $# -gt 0 && $1 != --* ]]; then WORK_DIR_ARGS=(--work-dir "$1"); shift; fi
[[ ${SIGNAL_LEAD:-120} =~ ^[0-9]+$ ]] || {
  echo "error: SIGNAL_LEAD must be a number of seconds, got '$SIGNAL_LEAD'" >&2; exit 2; }
if [[ ${REQUEUE:-0} == 1 && -z ${SLURM_JOB_ID:-} ]]; then
  echo 'error: REQUEUE=1 requeues the sbatch job this script runs in; submit it with sbatch' \
       '--requeue (SLURM_JOB_ID is not set here)' >&2
  exit 2
fi
if [[ -n ${SLURM_JOB_ID:-} && -n ${SIGNAL_LEAD:-} && $SIGNAL_LEAD != 0 ]]; then
  echo "error: SIGNAL_LEAD=$SIGNAL_LEAD does nothing inside Slurm job $SLURM_JOB_ID (srun" \
       "--signal applies only when srun creates the allocation); submit the job with" \
       "sbatch --signal=USR1@$SIGNAL_LEAD and leave SIGNAL_LEAD unset" >&2
  exit 2
fi
if [[ -z ${SLURM_JOB_ID:-} && ${SIGNAL_LEAD:-120} != 0 ]]; then
  export SRUN_ARGS="--signal=USR1@${SIGNAL_LEAD:-120} ${SRUN_ARGS:-}"
fi
RESUME_ARGS=()
# a requeued job continues from last_checkpoint, if the first run wrote one (train.py refuses
# --resume with nothing to resume); the work dir as train.py chooses it by default
CONFIG_NAME=${CONFIG##*/}
RUN_DIR=${WORK_DIR_ARGS[1]:-work_dirs/${CONFIG_NAME%.py}}
if [[ ${SLURM_RESTART_COUNT:-0} != 0 && " $* " != *" --resume"* \
      && -f $RUN_DIR/last_checkpoint ]]; then
  RESUME_ARGS=(--resume)
fi
# As the batch shell (sbatch --wrap 'exec ...') this script also gets the SIGTERM Slurm sends
# a whole job (termination, scontrol requeue): it waits for the tasks, which save and exit 75,
# instead of ending first.
trap 'echo "slurm_train.sh: SIGTERM received; waiting for the tasks to save" >&2' TERM
"$(dirname "$0")/_launch.sh" slurm "$PARTITION" "$JOB_NAME" train.py "$CONFIG" \
    "${WORK_DIR_ARGS[@]}" "${RESUME_ARGS[@]}" "$@" && STATUS=0 || STATUS=$?
if [[ $STATUS == 75 && ${REQUEUE:-0} == 1 ]]; then
  echo "preempted: requeueing Slurm job $SLURM_JOB_ID; it resumes from the last checkpoint" >&2
  if ! scontrol requeue "$SLURM_JOB_ID"; then
    echo "slurm_train.sh: scontrol requeue $SLURM_JOB_ID failed (above); unless Slurm requeues" \
         "the job itself (scontrol requeue from outside, preemption with PreemptMode=REQUEUE)," \
         "continue it with the same command plus --resume" >&2
  fi
fi
exit "$STATUS"
