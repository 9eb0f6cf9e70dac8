#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs, then lint, types and tests.
# End-to-end tests start real servers (Prosody, ngircd, InspIRCd, PostgreSQL) on loopback.
# Extra arguments go to pytest, e.g. scripts/test.sh -k echo
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh test
uv=(uv); command -v uv >/dev/null || uv=(.tools/bin/uv)
run=("${uv[@]}" run --frozen)

echo "== ruff check";  "${run[@]}" ruff check .
echo "== ruff format"; "${run[@]}" ruff format --check .
echo "== mypy --strict"; "${run[@]}" mypy gateway legacy_plugins examples bench tests
echo "== pytest"
# Every end-to-end test must run: a skipped one fails the run (see tests/conftest.py).
PASSERELLE_REQUIRE_E2E=1 "${run[@]}" pytest -p no:cacheprovider "$@"
