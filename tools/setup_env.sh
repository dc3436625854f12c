#!/usr/bin/env bash
# One-command environment set-up for mixedae (used by `make test` and `make demo`).
#
# Creates .venv, installs the pinned torch stack, builds mmcv 2.1.0 from its source
# distribution, caches the built wheel outside the repository, then installs the package in
# editable mode. By default mmcv is built without its compiled ops (MMCV_WITH_OPS=0, pure
# Python, about a minute): `import mixedae` then serves the few ops the models call from
# torchvision (mixedae/utils/mmcv_ops.py). MIXEDAE_MMCV_OPS=1 builds mmcv with its compiled ops
# instead (CUDA ops too when a CUDA toolkit is visible; C++ standard raised to C++20, which
# torch >= 2.10 headers require; about 11 minutes on 2 cores, once per machine).
# A stamp keyed by the inputs makes a re-run with nothing changed take seconds.
# The interpreter that creates .venv: $PYTHON if set, else the newest Python 3.10-3.12 on PATH
# (`bash tools/setup_env.sh --print-python` prints the choice and exits).
# MIXEDAE_BASE_VENV=DIR makes $VENV a layer over that (already set-up) environment: it holds
# only mmcv and the package, and sees DIR's packages after its own (a .pth file), so a second
# mmcv build costs megabytes instead of a second torch (`make test-parity` uses it).
set -euo pipefail

PYTHON_CANDIDATES=(python3.12 python3.11 python3.10 python3)
PYTHON_MIN_MINOR=10
PYTHON_MAX_MINOR=12

# Print the interpreter to use; fail listing what was looked for and what was found.
pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then
        command -v "$PYTHON" >/dev/null \
            || { echo "setup_env: PYTHON=$PYTHON is not an executable" >&2; return 1; }
        echo "$PYTHON"
        return 0
    fi
    local name version minor best="" best_minor=-1 found=()
    for name in "${PYTHON_CANDIDATES[@]}"; do
        command -v "$name" >/dev/null || continue
        version="$("$name" -c 'import sys, venv; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" \
            || { found+=("$name (no venv module)"); continue; }
        found+=("$name $version")
        [[ "$version" == 3.* ]] || continue
        minor="${version#3.}"
        if (( minor >= PYTHON_MIN_MINOR && minor <= PYTHON_MAX_MINOR && minor > best_minor )); then
            best="$name" best_minor="$minor"
        fi
    done
    if [[ -z "$best" ]]; then
        echo "setup_env: no Python 3.$PYTHON_MIN_MINOR to 3.$PYTHON_MAX_MINOR with the venv module on PATH;" \
             "looked for ${PYTHON_CANDIDATES[*]}; found: ${found[*]:-none}." \
             "Install one or set PYTHON=/path/to/python3.x" >&2
        return 1
    fi
    echo "$best"
}

if [[ "${1:-}" == "--print-python" ]]; then
    pick_python
    exit
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# absolute, from the caller's folder: the mmcv build runs its interpreter from another folder
VENV="$(realpath -m "${VENV:-$ROOT/.venv}")"
cd "$ROOT"

TORCH_VERSION="2.14.1"
TORCHVISION_VERSION="0.29.1"
MMCV_VERSION="2.1.0"
CACHE_DIR="${MIXEDAE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mixedae}"
MMCV_OPS="${MIXEDAE_MMCV_OPS:-0}"
[[ "$MMCV_OPS" == 0 || "$MMCV_OPS" == 1 ]] \
    || { echo "setup_env: MIXEDAE_MMCV_OPS must be 0 (mmcv without compiled ops) or 1 (compiled ops), not '$MMCV_OPS'" >&2; exit 1; }

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

stamp_key() {
    cat "$ROOT/pyproject.toml" "$ROOT/tools/setup_env.sh" | sha256sum | cut -c1-16
}
STAMP="$VENV/.mixedae-setup-$(stamp_key)-mmcv-ops$MMCV_OPS"
if [[ -f "$STAMP" ]]; then
    log "environment up to date ($VENV)"
    exit 0
fi

BASE_VENV="${MIXEDAE_BASE_VENV:+$(realpath -m "$MIXEDAE_BASE_VENV")}"
if [[ -n "$BASE_VENV" ]]; then
    [[ -x "$BASE_VENV/bin/python" ]] \
        || { echo "setup_env: MIXEDAE_BASE_VENV=$BASE_VENV has no bin/python; set it up first (make setup)" >&2; exit 1; }
    [[ "$BASE_VENV" != "$VENV" ]] \
        || { echo "setup_env: MIXEDAE_BASE_VENV and VENV are the same folder ($VENV)" >&2; exit 1; }
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    PYTHON="${BASE_VENV:+$BASE_VENV/bin/python}"
    PYTHON="${PYTHON:-$(pick_python)}"
    log "creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check -q)
if [[ -n "$BASE_VENV" ]]; then
    # site.addsitedir appends the base's packages after this venv's own and reads its .pth files
    BASE_SITE="$("$BASE_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    "$PY" - "$BASE_SITE" <<'PYEOF'
import sys, sysconfig
from pathlib import Path
line = f"import site; site.addsitedir({sys.argv[1]!r})\n"
Path(sysconfig.get_path("purelib"), "_mixedae_base_venv.pth").write_text(line)
PYEOF
    log "layered over $BASE_VENV (its packages come after this environment's own)"
fi

log "installing torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION and build tools"
"${PIP[@]}" install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" \
    "setuptools>=77,<81" wheel ninja packaging

# Which mmcv build: without ops (one wheel for every machine), or compiled ops for this
# machine's CPU, or also CUDA when nvcc is usable; the wheel cache key records which.
if [[ "$MMCV_OPS" == 0 ]]; then
    BUILD_TAG="noops"
    FORCE_CUDA=0
elif "$PY" -c 'import sys, torch; from torch.utils.cpp_extension import CUDA_HOME; sys.exit(0 if torch.cuda.is_available() and CUDA_HOME else 1)'; then
    # compile for the visible GPUs (Hopper: 9.0) unless TORCH_CUDA_ARCH_LIST is set
    TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$("$PY" -c 'import torch; print(";".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})))')}"
    export TORCH_CUDA_ARCH_LIST
    BUILD_TAG="cu$("$PY" -c 'import torch; print(torch.version.cuda.replace(".", ""))')-sm${TORCH_CUDA_ARCH_LIST//[^0-9A-Za-z]/_}"
    FORCE_CUDA=1
else
    BUILD_TAG="cpu"
    FORCE_CUDA=0
fi
PY_TAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
WHEEL_DIR="$CACHE_DIR/wheels/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PY_TAG-$BUILD_TAG"

# mmcv at the pinned version, with its compiled extension present exactly when asked for
mmcv_ok() {
    "$PY" - <<PYEOF 2>/dev/null
import importlib.util
import mmcv
assert mmcv.__version__ == "$MMCV_VERSION", mmcv.__version__
assert (importlib.util.find_spec("mmcv._ext") is not None) == bool($MMCV_OPS)
PYEOF
}

if mmcv_ok; then
    log "mmcv $MMCV_VERSION ($BUILD_TAG) already installed"
else
    if ! compgen -G "$WHEEL_DIR/mmcv-*.whl" >/dev/null; then
        MAX_JOBS="${MAX_JOBS:-$(nproc)}"
        if [[ "$MMCV_OPS" == 1 ]]; then
            log "building mmcv $MMCV_VERSION ($BUILD_TAG ops, MAX_JOBS=$MAX_JOBS) from source; about 11 minutes on 2 cores, once per machine"
        else
            log "building mmcv $MMCV_VERSION without compiled ops from source; about a minute, once per machine"
        fi
        BUILD_DIR="$(mktemp -d)"
        trap 'rm -rf "$BUILD_DIR"' EXIT
        "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation \
            "mmcv==$MMCV_VERSION" -d "$BUILD_DIR"
        tar -xzf "$BUILD_DIR"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD_DIR"
        SRC="$BUILD_DIR/mmcv-$MMCV_VERSION"
        # torch >= 2.10 headers refuse anything older than C++20.
        sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
        grep -q 'std=c++20' "$SRC/setup.py" || { echo "setup_env: could not patch the C++ standard in $SRC/setup.py" >&2; exit 1; }
        # without ops its setup.py names the package mmcv-lite, which mmdet's and our
        # requirement `mmcv==2.1.0` do not accept: it is mmcv 2.1.0 all the same
        sed -i "s/name='mmcv' if os.getenv('MMCV_WITH_OPS', '1') == '1' else 'mmcv-lite'/name='mmcv'/" "$SRC/setup.py"
        grep -q "^    name='mmcv',$" "$SRC/setup.py" || { echo "setup_env: could not patch the package name in $SRC/setup.py" >&2; exit 1; }
        mkdir -p "$WHEEL_DIR.partial"
        (cd "$SRC" && MMCV_WITH_OPS="$MMCV_OPS" FORCE_CUDA="$FORCE_CUDA" MAX_JOBS="$MAX_JOBS" \
            "$PY" -m pip --disable-pip-version-check wheel --no-build-isolation --no-deps \
            -w "$WHEEL_DIR.partial" . )
        rm -rf "$WHEEL_DIR" && mv "$WHEEL_DIR.partial" "$WHEEL_DIR"
        log "cached mmcv wheel in $WHEEL_DIR"
    else
        log "using cached mmcv wheel from $WHEEL_DIR"
    fi
    # its run-time requirements (mmengine, opencv, ...) come with the package below
    "${PIP[@]}" install --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
fi

log "installing mixedae (editable) and its pinned dependencies"
"${PIP[@]}" install -e "$ROOT[dev]"
# mixedae puts its torchvision-backed mmcv._ext in place when the compiled one is absent
"$PY" -c "import mixedae, mmcv.ops, mmdet.models, mmseg.models; from mixedae.utils.mmcv_ops import compiled_mmcv_ops; assert compiled_mmcv_ops() == bool($MMCV_OPS)" \
    || { echo "setup_env: mmcv $MMCV_VERSION ($BUILD_TAG) is installed but mmcv.ops does not import as expected" >&2; exit 1; }

rm -f "$VENV"/.mixedae-setup-*
touch "$STAMP"
log "done"
