#!/usr/bin/env bash
# `make env-torch211`: a second environment laid out as on the lent GPU machine (docs/setup.md
# "The torch-2.11 environment"), to rehearse its torch 2.11 / Triton 3.6 / numpy 2.5 stack and
# tools/gpu_window.sh on CPU:
#   SYSTEM (printed)       the machine's python3: Python 3.12 with torch 2.11 (PyPI's wheel, built
#                          for CUDA 13; it runs on CPU) and the packages of tools/torch211.txt,
#                          built once per machine in the cache below (it holds no project code),
#                          so a fresh clone reuses it; `make env-torch211` links it as
#                          .venv-torch211-system;
#   .venv-torch211         the window's environment, made from it by tools/window_env.sh: a plain
#                          venv seeing the system's packages after its own, with the wheelhouse
#                          (`make wheelhouse`) and this checkout installed offline.
# The system's packages (about 3 GB downloaded with torch's CUDA libraries, 5 GB installed) are
# installed once per machine in ${MIXEDAE_CACHE:-~/.cache/mixedae}/venvs/.
# A stamp keyed by the inputs makes a re-run with nothing changed take a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source tools/_py312.sh
VENV="$ROOT/.venv-torch211"
CACHE_DIR="${MIXEDAE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mixedae}"
SYSTEM="$CACHE_DIR/venvs/torch211-system-$(sha256sum tools/torch211.txt | cut -c1-16)"

log() { printf '[torch211 %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

key() {
    cat tools/torch211.txt tools/wheelhouse.txt tools/setup_torch211_env.sh tools/window_env.sh \
        tools/make_wheelhouse.sh pyproject.toml | sha256sum | cut -c1-16
}
STAMP="$VENV/.mixedae-torch211-$(key)"
if [[ -f "$STAMP" ]]; then
    log "environment up to date ($VENV)"
    exit 0
fi

if [[ ! -f "$SYSTEM/.mixedae-system-$(sha256sum tools/torch211.txt | cut -c1-16)" ]]; then
    PY="$(py312)" || exit 2
    log "creating $SYSTEM ($("$PY" --version)) with torch 2.11 and the GPU machine's packages (about 3 GB downloaded, once)"
    rm -rf "$SYSTEM"
    mkdir -p "$(dirname "$SYSTEM")"
    "$PY" -m venv "$SYSTEM"
    # no pip cache: the download would sit on disk a second time beside the installed copy
    "$SYSTEM/bin/python" -m pip --disable-pip-version-check -q install --no-cache-dir \
        -r tools/torch211.txt
    touch "$SYSTEM/.mixedae-system-$(sha256sum tools/torch211.txt | cut -c1-16)"
fi

ln -sfn "$SYSTEM" "$ROOT/.venv-torch211-system"
log "building the wheelhouse"
bash tools/make_wheelhouse.sh
log "creating $VENV from $SYSTEM with the wheelhouse (tools/window_env.sh)"
bash tools/window_env.sh "$SYSTEM/bin/python" "$VENV" "$ROOT/wheelhouse"
touch "$STAMP"
log "done"
