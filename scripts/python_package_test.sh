#!/usr/bin/env bash
# Builds the Python package (python/, PyO3 + maturin) into a fresh virtual environment with
# `pip install ./python`, installs the test dependencies (numpy, pytest, langchain-core,
# langchain-tests, llama-index-core; pinned to the versions the suite was written against, so
# that a new release of a framework cannot turn CI red overnight) and runs its pytest suite
# (python/tests). Prints the step's time. Exits non-zero on failure.
#
#   scripts/python_package_test.sh [--dev] [pytest args...]
#
# --dev builds the extension with cargo's dev profile (reusing `cargo test`'s compiled
# dependencies; much faster on a fresh CI machine) instead of release. The tests that need the
# default model expect it installed (`latentdb model fetch`): they skip without it, and fail
# under CI=true.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$(date +%s)

if [[ "${1:-}" == "--dev" ]]; then
    export MATURIN_PEP517_ARGS="--profile dev"
    shift
fi
# The workspace's target directory, so that compiled dependencies are shared with cargo.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

python="${PYTHON:-python3}"
venv="$(mktemp -d)/venv"
trap 'rm -rf "$(dirname "$venv")"' EXIT
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ./python
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "numpy==2.4.6" "pytest==9.2.0" "pytest-asyncio==1.5.0" "langchain-core==1.8.3" \
    "langchain-tests==1.1.9" "llama-index-core==0.14.25"
built=$(date +%s)
echo "python package: built and installed in $((built - start)) s"

# From python/ (its pyproject.toml configures pytest), against the installed package: the
# pytest script (not `python -m pytest`) keeps python/ itself, the uncompiled sources, off
# sys.path.
(cd /tmp && "$venv/bin/python" -c 'import latentdb; print("testing", latentdb.__file__)')
(cd python && "$venv/bin/pytest" -q -p no:cacheprovider "$@")
end=$(date +%s)
echo "python package: tests passed; step took $((end - start)) s (build+install $((built - start)) s, pytest $((end - built)) s)"
