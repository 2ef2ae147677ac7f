#!/usr/bin/env bash
# Runs the official OpenAI and Anthropic Python SDKs, the OpenAI Node SDK, the Vercel AI SDK and Codex CLI
# against a built Switchyard binary (default: target/release/switchyard). Installs the pinned Python SDKs
# into a virtualenv under target/ and the Node packages into tests/sdk/node/node_modules. Set
# SDK_REQUIRE_NODE=1 to fail when npm is missing instead of skipping the Node checks.
set -euo pipefail
cd "$(dirname "$0")/../.."
binary="${1:-target/release/switchyard}"
venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
# The Node SDK, the Vercel AI SDK and Codex CLI, pinned in tests/sdk/node/package-lock.json.
if command -v npm >/dev/null; then
  (cd tests/sdk/node && npm ci --no-audit --no-fund --loglevel=error)
elif [ -n "${SDK_REQUIRE_NODE:-}" ]; then
  echo "npm is missing: the Node, Vercel AI SDK and Codex CLI checks cannot run" >&2
  exit 1
fi
"$venv/bin/python" tests/sdk/openai_sdk_check.py "$binary"
