#!/usr/bin/env bash
# Sets up and runs the Passerelle demo on loopback: a local Prosody and Passerelle.
# Arguments go to `passerelle demo` (see `passerelle demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh demo
uv=(uv); command -v uv >/dev/null || uv=(.tools/bin/uv)
exec "${uv[@]}" run --frozen passerelle demo "$@"
