#!/usr/bin/env bash
# Runs every notebook under notebooks/ headless on a tiny sweep this script produces first.
#
#   scripts/test-notebooks.sh
#
# 1. a Python venv with notebooks/requirements.txt (cached in target/notebook-venv, rebuilt when
#    the requirements change; override with FEDSIM_NOTEBOOK_VENV);
# 2. the release fedsim binary (FEDSIM_BIN to use another) runs the sweep in
#    scripts/small-sweep.args into target/notebook-results;
# 3. notebooks/run_notebooks.py executes each notebook against it and prints
#    "notebooks: N passed, M failed"; the exit code is non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

python=${FEDSIM_PYTHON:-$(command -v python3.11 || command -v python3)}
venv=${FEDSIM_NOTEBOOK_VENV:-target/notebook-venv}
stamp="$venv/requirements.installed"
if ! cmp -s notebooks/requirements.txt "$stamp" || [ ! -x "$venv/bin/python" ]; then
    echo "== notebooks: creating $venv with $("$python" --version)"
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        # Debian's system Python keeps venv (ensurepip) in a separate package.
        rm -rf "$venv"
        version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$version-venv" >/dev/null
        "$python" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r notebooks/requirements.txt
    cp notebooks/requirements.txt "$stamp"
fi
echo "== notebooks: venv ready ($((SECONDS - started)) s)"

fedsim=${FEDSIM_BIN:-}
if [ -z "$fedsim" ]; then
    # The binary users run (`cargo run --release`, fat LTO): built once, then reused by the
    # other scripts and by CI's run of the README main command.
    cargo build --release --bin fedsim --quiet
    fedsim=target/release/fedsim
fi
results=target/notebook-results
rm -rf "$results"
read -r -a sweep_args <<<"$(grep -v '^[[:space:]]*#' scripts/small-sweep.args | tr '\n' ' ')"
"$fedsim" sweep "${sweep_args[@]}" --out "$results" --jobs 2 --plain
echo "== notebooks: sweep ready ($((SECONDS - started)) s)"

FEDSIM_RESULTS="$results" FEDSIM_NOTEBOOK_OUT=target/notebook-executed \
    "$venv/bin/python" notebooks/run_notebooks.py
echo "== notebooks: done in $((SECONDS - started)) s"
