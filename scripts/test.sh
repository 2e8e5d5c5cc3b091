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
# The multi-node tests' throw-away swarms (tests/src/multinode.rs): daemons, namespaces, dirs.
mn_ns=$(ip netns list 2>/dev/null | awk '{print $1}' | grep '^ciwt-mn-' || true)
mn_dirs=$(find /tmp -maxdepth 1 -name 'ciwt-mn-*' 2>/dev/null || true)
mn_procs=$(pgrep -f -- '--data-root /tmp/ciwt-mn-' || true)
if [ -n "$left$vols$mn_ns$mn_dirs$mn_procs" ]; then
  echo "tests left stacks/volumes/throw-away swarms behind:" >&2
  printf '%s\n' $left $vols $mn_ns $mn_dirs >&2
  [ -z "$mn_procs" ] || echo "daemon pids: $mn_procs" >&2
  exit 1
fi
echo "all checks passed in $(( $(date +%s) - start ))s"
