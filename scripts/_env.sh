# Sourced by scripts/dedupd and scripts/test: find Python >= 3.12 and keep .venv installed and current.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

find_python() {
    local candidate
    # pyenv's own interpreters too: a pyenv shim without PYENV_VERSION set refuses a version it does not select.
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3 \
        "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3 /root/.pyenv/versions/3.1[2-9]*/bin/python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    echo "dedupd needs Python 3.12 or newer (set PYTHON=/path/to/python3.12)." >&2
    return 1
}

ensure_venv() {  # $1: the extras to install, e.g. "dev", or "" for none
    local extras="$1" stamp="$VENV/.dedupd-installed-${1:-base}" target="$ROOT"
    [ -z "$extras" ] || target="$ROOT[$extras]"
    if [ ! -x "$VENV/bin/python" ]; then
        local python
        python="$(find_python)"
        if ! "$python" -m venv "$VENV" >/dev/null 2>&1; then
            rm -rf "$VENV"
            echo "Cannot create a virtual environment: on Debian/Ubuntu run 'sudo apt-get install python3-venv'." >&2
            return 1
        fi
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
    fi
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        echo "Installing dedupd and its dependencies into .venv ..." >&2
        "$VENV/bin/python" -m pip install --quiet --editable "$target"
        touch "$stamp"
    fi
}
