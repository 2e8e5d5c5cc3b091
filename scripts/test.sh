#!/usr/bin/env bash
# The README's test command: sets up the machine and runs every check and test.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

scripts/setup.sh

echo "== formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== fixtures: static demo app and its images"
cargo run --quiet --locked -p ci-warm-tests --bin ci-warm-fixtures -- images

echo "== tests (unit, integration against the real swarm)"
# The swarm tests need Docker; in CI a missing Docker is a failure, never a skip.
export CI_WARM_REQUIRE_DOCKER=1
scripts/run-tests.sh

echo "== nix checks"
bash nix/checks.sh

echo "== leftovers"
left=$(docker stack ls --format '{{.Name}}' | grep '^ciwt_' || true)
vols=$(docker volume ls --format '{{.Name}}' | grep '^ciwt_' || true)
if [ -n "$left$vols" ]; then
  echo "tests left stacks/volumes behind:" >&2
  printf '%s\n' $left $vols >&2
  exit 1
fi
echo "all checks passed in $(( $(date +%s) - start ))s"
