#!/usr/bin/env bash
# Builds and runs every test of the workspace, as `cargo test --workspace` would, except that the
# scenarios against the real swarm (the files of tests/tests/) run a few files at a time: they
# spend their time waiting for swarm to converge, not on the CPU, so side by side they take half
# the wall time. Each file still runs two tests at a time, and its output is printed whole when
# it ends, so the log reads as if the files had run one after another.
#
# The test binaries are run directly, from one `cargo test --workspace --no-run`: a narrower cargo
# selection per file (`--test NAME`) resolves the tests crate differently and rebuilds it on
# every switch.
#
# Usage: scripts/run-tests.sh [PARALLEL]   (swarm files at a time, default 3; 1 = one by one)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
parallel=${1:-3}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo test --workspace --locked --no-run --message-format=json-render-diagnostics >"$work/build.json"

field() { sed -E "s/.*\"$1\":\"([^\"]*)\".*/\\1/" <<<"$2"; }
: >"$work/plain"
: >"$work/swarm"
while IFS= read -r line; do
  case $line in
    *'"reason":"compiler-artifact"'*'"overflow_checks":'*',"test":true}'*'"executable":"'*) ;;
    *) continue ;;
  esac
  exe=$(field executable "$line")
  src=$(field src_path "$line")
  dir=$(dirname "$(field manifest_path "$line")")
  case $src in
    "$root"/tests/tests/*.rs) printf '%s\t%s\t%s\n' "$(basename "$src" .rs)" "$dir" "$exe" >>"$work/swarm" ;;
    *) printf '%s\t%s\t%s\n' "${src#"$root"/}" "$dir" "$exe" >>"$work/plain" ;;
  esac
done <"$work/build.json"

# cargo runs a test binary in its package's directory, with CARGO pointing at itself.
export CARGO=${CARGO:-$(command -v cargo)}

failed=0
while IFS=$'\t' read -r src dir exe; do
  echo "     Running $src"
  (cd "$dir" && "$exe" --test-threads=2) || failed=1
done <"$work/plain"
cargo test --workspace --locked --doc --quiet || failed=1
[ "$failed" -eq 0 ] || { echo "unit or integration tests failed (see above)" >&2; exit 1; }

# Longest first, so the slowest file never starts last; a file not in this list runs after them
# (a new test file is never left out for want of a place in the order).
order=(reconcile_swarm canonical_swarm abra_deployer multinode tls_probes status_swarm health_gate abra_sim
  swarm_demo deployer_stack snapshot_crash)
: >"$work/queue"
for f in "${order[@]}"; do grep -q "^$f"$'\t' "$work/swarm" && echo "$f" >>"$work/queue"; done
while IFS=$'\t' read -r f _; do
  [[ " ${order[*]} " == *" $f "* ]] || echo "$f" >>"$work/queue"
done <"$work/swarm"

export work
run_one() {
  local f=$1 name dir exe start rc=0
  IFS=$'\t' read -r name dir exe < <(grep "^$f"$'\t' "$work/swarm")
  start=$(date +%s)
  (cd "$dir" && "$exe" --test-threads=2) >"$work/$f.log" 2>&1 || rc=$?
  # One file's output at a time, never interleaved with another's.
  flock "$work/print.lock" bash -c '
    echo "     Ran tests/tests/$1.rs: $2 in $3s"
    cat "$4"' _ "$f" "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)")" \
    "$(( $(date +%s) - start ))" "$work/$f.log"
  [ "$rc" -eq 0 ] || echo "$f" >>"$work/failed"
}
export -f run_one
xargs -P "$parallel" -I{} bash -c 'run_one "$1"' _ {} <"$work/queue"

n=$(wc -l <"$work/queue")
if [ -s "$work/failed" ]; then
  echo "swarm test files that failed: $(paste -sd' ' "$work/failed")" >&2
  exit 1
fi
echo "all $n swarm test files passed"
