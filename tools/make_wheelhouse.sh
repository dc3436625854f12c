#!/usr/bin/env bash
# `make wheelhouse`: the wheels the GPU machine lacks, for its Python 3.12 on manylinux x86_64,
# in ./wheelhouse (git-ignored; carried to the machine by tools/gpu_window.sh's `run` call,
# docs/benchmarks.md). The pinned list is tools/wheelhouse.txt, downloaded without their
# dependencies (the machine's python3 has the rest); mmcv 2.1.0 has no cp312 wheel on PyPI, so
# it is built here from its source distribution without compiled ops (pure Python, seconds)
# with a Python 3.12 interpreter ($PYTHON, else python3.12 on PATH, else pyenv's). The mmcv wheel is cached in
# ${MIXEDAE_CACHE:-~/.cache/mixedae}/wheels/. Prints the wheelhouse's size and file count.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(realpath -m "${WHEELHOUSE:-$ROOT/wheelhouse}")"
source "$ROOT/tools/_py312.sh"
PY="$(py312)" || exit 2
MMCV_VERSION="2.1.0"
CACHE_DIR="${MIXEDAE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mixedae}"
MMCV_DIR="$CACHE_DIR/wheels/mmcv-$MMCV_VERSION-cp312-noops"
# pip matches each platform tag exactly: the pinned wheels carry one of these
PLATFORMS=(manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_24_x86_64 manylinux_2_28_x86_64)

log() { printf '[wheelhouse %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

mkdir -p "$OUT.partial"
log "downloading the pinned wheels of tools/wheelhouse.txt (cp312, manylinux x86_64)"
"$PY" -m pip --disable-pip-version-check -q download --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp "${PLATFORMS[@]/#/--platform=}" \
    -r "$ROOT/tools/wheelhouse.txt" -d "$OUT.partial"

if ! compgen -G "$MMCV_DIR/mmcv-*.whl" >/dev/null; then
    log "building mmcv $MMCV_VERSION without compiled ops with $("$PY" --version)"
    BUILD="$(mktemp -d)"
    trap 'rm -rf "$BUILD"' EXIT
    # a build interpreter with the wheelhouse's setuptools (it builds wheels by itself)
    "$PY" -m venv "$BUILD/venv"
    "$BUILD/venv/bin/python" -m pip --disable-pip-version-check -q install --no-index \
        "$OUT.partial"/setuptools-*.whl
    "$BUILD/venv/bin/python" -m pip --disable-pip-version-check -q download --no-deps \
        --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$BUILD"
    tar -xzf "$BUILD/mmcv-$MMCV_VERSION.tar.gz" -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # without ops its setup.py names the package mmcv-lite, which mmdet's requirement
    # `mmcv==2.1.0` does not accept: it is mmcv 2.1.0 all the same (as tools/setup_env.sh does)
    sed -i "s/name='mmcv' if os.getenv('MMCV_WITH_OPS', '1') == '1' else 'mmcv-lite'/name='mmcv'/" "$SRC/setup.py"
    grep -q "^    name='mmcv',$" "$SRC/setup.py" \
        || { echo "error: could not patch the package name in $SRC/setup.py" >&2; exit 1; }
    mkdir -p "$MMCV_DIR.partial"
    (cd "$SRC" && MMCV_WITH_OPS=0 "$BUILD/venv/bin/python" -m pip --disable-pip-version-check -q \
        wheel --no-build-isolation --no-deps -w "$MMCV_DIR.partial" .)
    rm -rf "$MMCV_DIR" && mv "$MMCV_DIR.partial" "$MMCV_DIR"
    log "cached the mmcv wheel in $MMCV_DIR"
fi
cp "$MMCV_DIR"/mmcv-*.whl "$OUT.partial/"
rm -rf "$OUT" && mv "$OUT.partial" "$OUT"
log "$(find "$OUT" -name '*.whl' | wc -l) wheels, $(du -cb "$OUT"/*.whl | tail -1 | awk '{printf "%.1f MiB", $1 / 1048576}') in $OUT"
