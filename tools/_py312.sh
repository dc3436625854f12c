# Sourced by tools/make_wheelhouse.sh and tools/setup_torch211_env.sh: py312 prints a Python
# 3.12 interpreter (the GPU machine's version): $PYTHON if set, else python3.12 on PATH, else a
# pyenv-installed 3.12; fails naming what it looked for.
py312() {
    local candidates=() c
    if [[ -n "${PYTHON:-}" ]]; then
        candidates=("$PYTHON")
    else
        candidates=(python3.12 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12)
    fi
    for c in "${candidates[@]}"; do
        if [[ "$("$c" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" == 3.12 ]]; then
            echo "$c"
            return 0
        fi
    done
    echo "error: no Python 3.12 found (looked for ${candidates[*]}); set PYTHON=/path/to/python3.12" >&2
    return 2
}
