#!/usr/bin/env bash
# Runs the official OpenAI Python SDK against a built Switchyard binary (default: target/release/switchyard).
# Installs the pinned SDK into a virtualenv under target/ on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."
binary="${1:-target/release/switchyard}"
venv=target/sdk-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
"$venv/bin/python" tests/sdk/openai_sdk_check.py "$binary"
