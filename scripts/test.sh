#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests, then the Python
# foreign-client contract test against the built binaries. Creates its own
# virtualenv (.venv) with the packages in tests/python/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --bins
cargo test --all-targets

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
.venv/bin/python tests/python/test_contract.py
