#!/usr/bin/env bash
# Create (or refresh) the benchmark peers' environments under <repo>/.bench/ (git-ignored).
#
#   .bench/peers311  Python 3.11 venv: torch 2.14.1 + torchvision 0.29.1 + imagededup + imagehash.
#                    imagededup is the reference implementation dedupd must match bit for bit.
#   .bench/peers312  Python 3.12 venv: immaculate[sscd] (the CNN/near-dup peer for bench/encode.py).
#
# Idempotent: an environment whose marker file exists and whose imports work is left alone; run
# `bench/peers.sh --force` to rebuild both, `bench/peers.sh [--force] peers311` for only one (CI builds only
# peers311: the torch exporter tests run under it). torch is ~5.5 GB; pip resolves it from the local indexes
# configured in pip.conf (no internet needed). Do not use uv here: it ignores that pip configuration.
#
# imagededup import note: the spec (§1) says `from imagededup.methods import PHash` builds MobileNetV3
# (downloading its weights) at import. That is true of the reference commit 57a7e85, not of PyPI's
# 0.3.3.post2 installed here: its CNN.__init__ takes `model_config=None` and builds the model only when
# CNN() is called. Importing imagededup.methods still imports torch (a few seconds) but needs no network;
# our helpers (bench/_peers.py) import the hash classes and never instantiate CNN, so the missing
# weights (no internet) do not matter.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench_dir="$repo/.bench"
force=0
[[ "${1:-}" == "--force" ]] && force=1

find_python() {  # find_python 3.11 -> path of an interpreter reporting that major.minor, or empty
    local want="$1" cand
    for cand in "python$want" python3 "$HOME/.pyenv/versions/$want"*/bin/python3; do
        if command -v "$cand" >/dev/null 2>&1 \
            && [[ "$(PYENV_VERSION="$(pyenv_version "$want")" "$cand" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" == "$want" ]]; then
            command -v "$cand"
            return 0
        fi
    done
    return 1
}

pyenv_version() {  # newest installed pyenv version matching major.minor (empty without pyenv)
    local want="$1"
    command -v pyenv >/dev/null 2>&1 || return 0
    pyenv versions --bare 2>/dev/null | grep -E "^${want//./\\.}(\.[0-9]+)?$" | sort -V | tail -1
}

make_venv() {  # make_venv NAME PY_VERSION CHECK_CODE PIP_ARGS...
    local name="$1" want="$2" check="$3"
    shift 3
    local venv="$bench_dir/$name" marker="$bench_dir/$name/.peers-ok"
    if [[ $force -eq 0 && -f "$marker" ]] && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
        echo "peers.sh: $name is up to date ($venv)"
        return 0
    fi
    local py
    if ! py="$(find_python "$want")"; then
        echo "peers.sh: no Python $want interpreter found (tried python$want, python3, ~/.pyenv/versions/$want*)" >&2
        exit 1
    fi
    echo "peers.sh: building $name with $py (Python $want)"
    rm -rf "$venv"
    PYENV_VERSION="$(pyenv_version "$want")" "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install "$@"
    "$venv/bin/python" -c "$check"
    "$venv/bin/python" -m pip freeze > "$venv/.peers-ok"
    echo "peers.sh: $name ready"
}

mkdir -p "$bench_dir"
only="${2:-${1:-}}"  # `bench/peers.sh [--force] peers311` builds only that one (CI needs only torch's)
[[ "$only" == "--force" ]] && only=""

if [[ -z "$only" || "$only" == peers311 ]]; then
    make_venv peers311 3.11 \
        'import torch, torchvision, imagehash; from imagededup.methods.hashing import PHash; PHash()' \
        torch==2.14.1 torchvision==0.29.1 imagededup imagehash onnx onnxscript
fi
if [[ -z "$only" || "$only" == peers312 ]]; then
    make_venv peers312 3.12 \
        'import immaculate' \
        'immaculate[sscd]'
fi
