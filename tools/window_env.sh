#!/usr/bin/env bash
# The GPU window's environment (docs/benchmarks.md): a plain venv VENV that sees, after its own
# packages, those of the interpreter SYSTEM_PYTHON (on the GPU machine its python3, itself a
# venv holding torch 2.11, which `--system-site-packages` would not reach), with the wheels of
# WHEELHOUSE and this checkout (no dependencies) installed offline. No network is used.
#     bash tools/window_env.sh SYSTEM_PYTHON VENV WHEELHOUSE
# Used by tools/gpu_window.sh and tools/setup_torch211_env.sh (`make env-torch211`).
set -euo pipefail
[[ $# -eq 3 ]] || { echo "usage: $0 SYSTEM_PYTHON VENV WHEELHOUSE" >&2; exit 2; }
SYSTEM_PY="$1" VENV="$(realpath -m "$2")" WHEELHOUSE="$3"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
compgen -G "$WHEELHOUSE/*.whl" >/dev/null \
    || { echo "error: no wheels in $WHEELHOUSE; build them with \`make wheelhouse\` and carry the folder" >&2; exit 2; }
command -v "$SYSTEM_PY" >/dev/null \
    || { echo "error: SYSTEM_PYTHON '$SYSTEM_PY' is not an executable" >&2; exit 2; }

# the system interpreter's site-packages folders; its pip serves the new venv too
SITES="$("$SYSTEM_PY" -c 'import sysconfig; p = sysconfig.get_paths(); print(*dict.fromkeys([p["purelib"], p["platlib"]]), sep="\n")')"
BASE="$("$SYSTEM_PY" -c 'import sys; print(sys._base_executable)')"
rm -rf "$VENV"
"$BASE" -m venv --without-pip "$VENV"
OWN="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# site processes .pth files after the venv's own folder is on sys.path: addsitedir appends,
# so the venv's packages (the wheelhouse's) win over the system's
{
    echo "# $SYSTEM_PY's packages, after this venv's own (tools/window_env.sh)"
    while read -r site; do
        echo "import site; site.addsitedir('$site')"
    done <<<"$SITES"
} >"$OWN/zz_system_site_packages.pth"

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# --ignore-installed: never touch the system's copies (setuptools, timm) of these packages
"${PIP[@]}" install --no-index --no-deps --ignore-installed --no-compile "$WHEELHOUSE"/*.whl
"${PIP[@]}" install --no-index --no-deps --no-build-isolation -e "$ROOT"
"$VENV/bin/python" - "$OWN" <<'PYEOF'
import sys
own = sys.argv[1]
import mixedae, mmcv, mmdet, mmengine, mmseg, numpy, timm, torch, triton  # noqa: E401
for mod in (mmcv, mmdet, mmengine, mmseg, timm):
    assert mod.__file__.startswith(own), f'{mod.__name__} comes from {mod.__file__}, not {own}'
print(f'window env: torch {torch.__version__} (CUDA {torch.version.cuda}) from '
      f'{torch.__file__.rsplit("/torch/", 1)[0]}, triton {triton.__version__}, numpy '
      f'{numpy.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, '
      f'mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, timm {timm.__version__}')
PYEOF
