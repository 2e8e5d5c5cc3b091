#!/usr/bin/env bash
# The README's main-job command: sets up the machine, builds ci-warm and the demo fixtures, and
# runs the upgrade/rollback demo on the local swarm with the real engine:
#   bootstrap 1.0.0 -> upgrade to 1.1.0 (data kept) -> broken 1.2.0 rolled back with its data
#   restored -> 2.0.0 held as a major bump -> 1.3.0 held for its manual migration; then
#   `ci-warm status`, the builder loop's `ci-warm alerts poll` and the metrics textfile.
# `--keep` leaves the demo app and its state dir in place at the end. `--deployer abra` tells the
# same story with ci-warm driving abra (the abra simulator, `abra-sim`, over the same engine:
# no abra build can be installed here) instead of `docker stack deploy`.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
deployer=stack
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --deployer) shift; deployer=${1:-} ;;
    --deployer=*) deployer=${1#--deployer=} ;;
    *) echo "usage: $0 [--keep] [--deployer stack|abra]" >&2; exit 2 ;;
  esac
  shift
done
case "$deployer" in
  stack|abra) ;;
  *) echo "--deployer is stack or abra, not '$deployer'" >&2; exit 2 ;;
esac

scripts/setup.sh
echo "== building ci-warm and the demo fixtures"
cargo build --quiet --release --locked -p ci-warm -p ci-warm-tests
bin=$PWD/target/release
"$bin/ci-warm-fixtures" images

work=$(mktemp -d /tmp/ci-warm-demo.XXXXXX)
port=${DEMO_PORT:-18080}
if [ "$deployer" = abra ]; then
  # abra names the stack after the domain, dots becoming underscores.
  domain=ci-warm-demo.local
  stack=ci-warm-demo_local
else
  domain=demo.ci.example.org
  stack=ci-warm-demo
fi
# Removes the demo stack with its volume; swarm leaves the one-shot's exited container behind,
# and it holds the volume until pruned.
remove_demo_stack() {
  docker stack rm "$stack" >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do
    docker container prune -f --filter "label=com.docker.stack.namespace=$stack" >/dev/null 2>&1 || true
    [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$stack")" ] && break
    sleep 1
  done
  docker volume rm "${stack}_data" >/dev/null 2>&1 || true
  # abra keeps an app's secrets across undeploys; the demo's go with it.
  docker secret ls --format '{{.Name}}' | grep "^${stack}_" | xargs -r docker secret rm >/dev/null 2>&1 || true
}
cleanup() {
  if [ "$keep" = 0 ]; then
    remove_demo_stack
    rm -rf "$work"
  else
    echo "left running: stack $stack, state in $work/state (remove: docker stack rm $stack; docker volume rm ${stack}_data)"
  fi
}
trap cleanup EXIT
# A previous --keep run may have left the demo stack: start clean.
remove_demo_stack

"$bin/ci-warm-fixtures" recipe "$work/recipe" --upto 1.0.0+1.0.0 >/dev/null
if [ "$deployer" = abra ]; then
  # abra's own directory: ci-warm bootstraps the app (`abra app new`) into servers/default/.
  mkdir -p "$work/abra/servers/default"
  deployer_json="{ \"kind\": \"abra\", \"abra\": \"$bin/abra-sim\", \"server\": \"default\", \"abra_dir\": \"$work/abra\", \"timeout_secs\": 300 }"
  app_env_json="\"env\": { \"PORT\": \"$port\" }"
else
  cat > "$work/demo.env" <<ENV
TYPE=demo
DOMAIN=$domain
PORT=$port
COMPOSE_FILE=compose.yml
ENV
  deployer_json='{ "kind": "stack" }'
  app_env_json="\"env_file\": \"$work/demo.env\""
fi
cat > "$work/config.json" <<JSON
{
  "state_dir": "$work/state",
  "deployer": $deployer_json,
  "health": { "timeout_secs": 25, "interval_ms": 500 },
  "snapshot": { "reserve_bytes": 0, "reserve_percent": 1 },
  "metrics_file": "$work/ci-warm.prom",
  "apps": {
    "demo": {
      "recipe": "demo",
      "repo": "$work/recipe",
      "domain": "$domain",
      "stack": "$stack",
      $app_env_json,
      "initial_version": "1.0.0+1.0.0",
      "probes": [ { "url": "http://127.0.0.1:$port/health", "status": 200 } ]
    }
  }
}
JSON
echo "== deployer: $deployer"
export CI_WARM_CONFIG=$work/config.json
volume() { docker volume inspect -f '{{.Mountpoint}}' "${stack}_data"; }
show() {
  echo "   serving:   $(curl -fsS "http://127.0.0.1:$port/version" 2>/dev/null || echo '(down)')"
  echo "   marker:    $(cat "$(volume)/marker" 2>/dev/null || echo '(none)')"
  echo "   last_good: $(sed -n 's/.*"last_good": "\(.*\)".*/\1/p' "$work/state/demo/state.json")"
}
reconcile() {
  set +e
  "$bin/ci-warm" reconcile demo 2> "$work/last.log"
  code=$?
  set -e
  echo "   exit code: $code"
}
step() { echo; echo "== $*"; }

step "1. bootstrap: the first reconcile deploys 1.0.0+1.0.0"
reconcile
show

step "2. upstream publishes 1.1.0+1.0.0: health-gated upgrade, the data marker is kept"
"$bin/ci-warm-fixtures" publish "$work/recipe" 1.1.0+1.0.0 >/dev/null
reconcile
show

step "3. upstream publishes 1.2.0+1.0.0, which never gets healthy and clobbers the data"
"$bin/ci-warm-fixtures" publish "$work/recipe" 1.2.0+1.0.0 >/dev/null
reconcile
show
echo "   junk file: $(ls "$(volume)" | grep -c junk || true) (restored away)"
echo "   next tick (the failed version is not retried):"
reconcile

step "4. upstream publishes 2.0.0+2.0.0, a major bump: held for a person"
"$bin/ci-warm-fixtures" publish "$work/recipe" 2.0.0+2.0.0 >/dev/null
reconcile
show

step "5. upstream publishes 1.3.0+1.1.0, whose notes ask for a manual migration: held"
"$bin/ci-warm-fixtures" publish "$work/recipe" 1.3.0+1.1.0 >/dev/null
reconcile
show

step "6. what the operator sees: ci-warm status"
"$bin/ci-warm" status demo

step "7. what the builder loop gets: ci-warm alerts poll (archived only once acknowledged)"
"$bin/ci-warm" alerts poll
"$bin/ci-warm" alerts ack --all
echo "   after the acknowledgement a second poll delivers nothing: [$("$bin/ci-warm" alerts poll)]"

step "8. the Prometheus textfile ($work/ci-warm.prom), a few lines"
grep -E '^ci_warm_(upgrades_total|rollbacks_total|held_versions|last_run_success)' "$work/ci-warm.prom" | head -n 8 | sed 's/^/   /'
echo
echo "approve a hold with: ci-warm --config $work/config.json approve demo 2.0.0+2.0.0"
