#!/usr/bin/env bash
# One command for a lent GPU window (docs/benchmarks.md "The GPU window"): on the GPU machine,
# from the repository root with ./wheelhouse carried (`make wheelhouse`), no network:
#   1. env    a plain venv seeing the machine's python3 packages (torch 2.11, ...) after its own,
#             the wheelhouse and this checkout installed offline (tools/window_env.sh);
#   2. check  tools/gpu_check.py (ViT-B scale);
#   3. bench  tools/benchmark_topk_kernels.py (ViT-B at G = 4, bf16);
#   4. demo   tools/demo.py --preset gpu-window (pretraining of every method over 3 seeds, hr_acc,
#             linear probe, figures, report).
# Each part has its own time budget (seconds; WINDOW_S, ENV_BUDGET_S, CHECK_BUDGET_S and
# BENCH_BUDGET_S override the defaults below) inside the window's WINDOW_S (9 minutes on the
# GPU): the demo gets what is left. A part over its budget is stopped and the next one runs. Everything lands in $OUT (default work_dirs/window), at most 6 files:
#   window.log (all output), summary.tsv (part, exit status, seconds, budget),
#   gpu_check.json, topk_bench.json, demo.tar.gz (report, figures, metrics, logs, configs).
#     bash tools/gpu_window.sh [--allow-cpu] [PART ...]     PART: check, bench, demo (all)
# --allow-cpu: the CPU rehearsal: gpu_check --allow-cpu --scale tiny with the kernels in Triton's
# interpreter, the benchmark (which refuses without CUDA: exit status 2 is expected), the
# cpu-rehearsal demo preset. SYSTEM_PYTHON (default python3): the interpreter whose packages
# the venv sees; WINDOW_VENV (default /tmp/mixedae-window): the venv.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS
ALLOW_CPU=0
PARTS=()
for arg in "$@"; do
    case "$arg" in
        --allow-cpu) ALLOW_CPU=1 ;;
        check|bench|demo) PARTS+=("$arg") ;;
        # the header comment above, without its '#' (the shebang and the code left out)
        -h|--help) sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$ROOT/tools/gpu_window.sh"; exit 0 ;;
        *) echo "error: unknown argument '$arg'; usage: $0 [--allow-cpu] [check] [bench] [demo]" >&2
           exit 2 ;;
    esac
done
[[ ${#PARTS[@]} -gt 0 ]] || PARTS=(check bench demo)
OUT="$(realpath -m "${OUT:-work_dirs/window}")"
# default budgets (seconds): the GPU window's, and the CPU rehearsal's, sized for a loaded
# 2-core machine (docs/benchmarks.md)
GPU_WINDOW_S=540 GPU_ENV_BUDGET_S=90 GPU_CHECK_BUDGET_S=300 GPU_BENCH_BUDGET_S=90
CPU_WINDOW_S=1500 CPU_ENV_BUDGET_S=300 CPU_CHECK_BUDGET_S=900 CPU_BENCH_BUDGET_S=120
MODE=GPU
[[ $ALLOW_CPU == 1 ]] && MODE=CPU
for name in WINDOW_S ENV_BUDGET_S CHECK_BUDGET_S BENCH_BUDGET_S; do
    default="${MODE}_$name"
    printf -v "$name" '%s' "${!name:-${!default}}"
done
# what the demo leaves for packing the results
PACK_S=20
WORK="$(realpath -m "${WINDOW_WORK:-work_dirs/window_work}")"
VENV="${WINDOW_VENV:-/tmp/mixedae-window}"
mkdir -p "$OUT" "$WORK"
exec > >(tee "$OUT/window.log") 2>&1
TEE_PID=$!
printf 'part\tstatus\tseconds\tbudget_s\n' >"$OUT/summary.tsv"

log() { printf '[window %s +%ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - START))" "$*"; }

# run_part NAME BUDGET_S CMD...: CMD under `timeout` (124: over its budget), one summary row
run_part() {
    local name="$1" budget="$2" t0=$SECONDS rc
    shift 2
    log "$name: budget ${budget}s: $*"
    timeout --kill-after=10 "$budget" "$@"
    rc=$?
    [[ $rc -eq 124 || $rc -eq 137 ]] && log "$name: stopped by its ${budget}s budget"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$budget" >>"$OUT/summary.tsv"
    log "$name: exit status $rc after $((SECONDS - t0))s"
    return $rc
}

# finish STATUS: the summary, then exit once tee has written the log's last lines
finish() {
    log "done in $((SECONDS - START))s; summary:"
    cat "$OUT/summary.tsv"
    exec >&- 2>&-
    wait "$TEE_PID"
    exit "$1"
}

if [[ $ALLOW_CPU == 1 ]]; then
    # gpu_check's kernel row runs in Triton's interpreter on CPU
    SCALE=tiny PRESET=cpu-rehearsal CHECK_ARGS=(--allow-cpu) CHECK_ENV=(env TRITON_INTERPRET=1)
else
    SCALE=base PRESET=gpu-window CHECK_ARGS=() CHECK_ENV=()
fi
log "parts: ${PARTS[*]}; window ${WINDOW_S}s; output in $OUT"
run_part env "$ENV_BUDGET_S" bash tools/window_env.sh "${SYSTEM_PYTHON:-python3}" "$VENV" "$ROOT/wheelhouse" \
    || { log "no environment: nothing else runs"; finish 1; }
PY="$VENV/bin/python"
"$PY" -c 'import torch; print("device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU only")'
export PYTHONUNBUFFERED=1
FAILED=0
for part in "${PARTS[@]}"; do
    case "$part" in
        check) run_part check "$CHECK_BUDGET_S" "${CHECK_ENV[@]}" "$PY" tools/gpu_check.py "${CHECK_ARGS[@]}" \
                   --scale "$SCALE" --out "$OUT/gpu_check.json" || FAILED=1 ;;
        bench) run_part bench "$BENCH_BUDGET_S" "$PY" tools/benchmark_topk_kernels.py \
                   --out "$OUT/topk_bench.json"
               rc=$?
               # on CPU the benchmark's refusal (status 2, "needs a CUDA GPU") is the expected end
               [[ $rc -eq 0 || ( $ALLOW_CPU == 1 && $rc -eq 2 ) ]] || FAILED=1 ;;
        demo)
            left=$((WINDOW_S - (SECONDS - START) - PACK_S))
            if (( left < 30 )); then
                log "demo: only ${left}s left of the window: not started"
                printf 'demo\tnot started\t0\t%s\n' "$left" >>"$OUT/summary.tsv"
                FAILED=1
            else
                run_part demo "$left" "$PY" tools/demo.py --preset "$PRESET" \
                    --out "$WORK/demo" --data "$WORK/data" || FAILED=1
            fi
            # what came out, checkpoints left behind (the report, figures, metrics, logs, configs)
            if [[ -d "$WORK/demo" ]]; then
                tar -czf "$OUT/demo.tar.gz" -C "$WORK" --exclude='*.pth' --exclude='last_checkpoint' demo
                log "demo: $(du -h "$OUT/demo.tar.gz" | cut -f1) in $OUT/demo.tar.gz"
            fi ;;
    esac
done
finish $FAILED
