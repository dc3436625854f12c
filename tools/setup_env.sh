#!/usr/bin/env bash
# One-command environment set-up for mixedae (used by `make test` and `make demo`).
#
# Creates .venv, installs the pinned torch stack, builds mmcv 2.1.0 from its source
# distribution (full ops; CUDA ops too when a CUDA toolkit is visible) with the C++
# standard raised to C++20 (torch >= 2.10 headers require it), caches the built wheel
# outside the repository, then installs the package in editable mode.
# A stamp keyed by the inputs makes a re-run with nothing changed take seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3.11}"
VENV="${VENV:-$ROOT/.venv}"
TORCH_VERSION="2.14.1"
TORCHVISION_VERSION="0.29.1"
MMCV_VERSION="2.1.0"
CACHE_DIR="${MIXEDAE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mixedae}"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

stamp_key() {
    cat "$ROOT/pyproject.toml" "$ROOT/tools/setup_env.sh" | sha256sum | cut -c1-16
}
STAMP="$VENV/.mixedae-setup-$(stamp_key)"
if [[ -f "$STAMP" ]]; then
    log "environment up to date ($VENV)"
    exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)

log "installing torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION and build tools"
"${PIP[@]}" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
    "setuptools>=77,<81" wheel ninja packaging

# CUDA ops are built when nvcc is usable; the wheel cache key records which.
if "$PY" -c 'import sys, torch; from torch.utils.cpp_extension import CUDA_HOME; sys.exit(0 if torch.cuda.is_available() and CUDA_HOME else 1)'; then
    CUDA_TAG="cu$("$PY" -c 'import torch; print(torch.version.cuda.replace(".", ""))')"
    FORCE_CUDA=1
else
    CUDA_TAG="cpu"
    FORCE_CUDA=0
fi
PY_TAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
WHEEL_DIR="$CACHE_DIR/wheels/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PY_TAG-$CUDA_TAG"

mmcv_ok() {
    "$PY" - <<PYEOF 2>/dev/null
import mmcv, mmcv.ops
assert mmcv.__version__ == "$MMCV_VERSION", mmcv.__version__
from mmcv.ops import nms, roi_align  # compiled ops present
PYEOF
}

if mmcv_ok; then
    log "mmcv $MMCV_VERSION with ops already installed"
else
    if ! compgen -G "$WHEEL_DIR/mmcv-*.whl" >/dev/null; then
        log "building mmcv $MMCV_VERSION ($CUDA_TAG ops) from source; about 11 minutes on 2 cores, once per machine"
        BUILD_DIR="$(mktemp -d)"
        trap 'rm -rf "$BUILD_DIR"' EXIT
        "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation \
            "mmcv==$MMCV_VERSION" -d "$BUILD_DIR"
        tar -xzf "$BUILD_DIR"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD_DIR"
        SRC="$BUILD_DIR/mmcv-$MMCV_VERSION"
        # torch >= 2.10 headers refuse anything older than C++20.
        sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
        grep -q 'std=c++20' "$SRC/setup.py" || { echo "setup_env: could not patch the C++ standard in $SRC/setup.py" >&2; exit 1; }
        mkdir -p "$WHEEL_DIR.partial"
        (cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA="$FORCE_CUDA" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
            "$PY" -m pip --disable-pip-version-check wheel --no-build-isolation --no-deps \
            -w "$WHEEL_DIR.partial" . )
        rm -rf "$WHEEL_DIR" && mv "$WHEEL_DIR.partial" "$WHEEL_DIR"
        log "cached mmcv wheel in $WHEEL_DIR"
    else
        log "using cached mmcv wheel from $WHEEL_DIR"
    fi
    # its run-time requirements (mmengine, opencv, ...) come with the package below
    "${PIP[@]}" install --no-deps "$WHEEL_DIR"/mmcv-*.whl
fi

log "installing mixedae (editable) and its pinned dependencies"
"${PIP[@]}" install -e "$ROOT[dev]"
"$PY" -c "from mmcv.ops import nms, roi_align" \
    || { echo "setup_env: mmcv $MMCV_VERSION is installed but its compiled ops do not import" >&2; exit 1; }

rm -f "$VENV"/.mixedae-setup-*
touch "$STAMP"
log "done"
