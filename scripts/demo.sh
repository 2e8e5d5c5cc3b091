#!/usr/bin/env bash
# The README's main-job command: sets up the machine, builds ci-warm and the demo images, and
# runs the demo on the local swarm. `--keep` leaves the demo app deployed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=0
for arg in "$@"; do
  case "$arg" in
    --keep) keep=1 ;;
    *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
  esac
done

scripts/setup.sh
echo "== building ci-warm and the demo fixtures"
cargo build --quiet --release --locked -p ci-warm -p ci-warm-tests
fixtures=target/release/ci-warm-fixtures
"$fixtures" images

work=$(mktemp -d /tmp/ci-warm-demo.XXXXXX)
stack=ci-warm-demo
port=${DEMO_PORT:-18080}
cleanup() {
  if [ "$keep" = 0 ]; then
    docker stack rm "$stack" >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do
      [ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$stack")" ] && break
      sleep 1
    done
    docker volume rm "${stack}_data" >/dev/null 2>&1 || true
    rm -rf "$work"
  fi
}
trap cleanup EXIT

echo "== generating the demo recipe in $work/recipe"
"$fixtures" recipe "$work/recipe" --upto 1.0.0+1.0.0
git -C "$work/recipe" tag --list

echo "== deploying 1.0.0+1.0.0 as stack $stack on port $port"
(cd "$work/recipe" && git checkout --quiet 1.0.0+1.0.0 &&
  STACK_NAME=$stack PORT=$port docker stack deploy --detach=true -c compose.yml "$stack")
echo -n "waiting for health"
for _ in $(seq 1 90); do
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
  echo -n "."; sleep 1
done
echo
docker service ls --filter "label=com.docker.stack.namespace=$stack"
echo "version label: $(docker service inspect -f "{{index .Spec.Labels \"coop-cloud.$stack.version\"}}" "${stack}_app")"
mount=$(docker volume inspect -f '{{.Mountpoint}}' "${stack}_data")
echo "data volume:   $mount"
echo "marker:        $(cat "$mount/marker")"
echo "health:        $(curl -fsS "http://127.0.0.1:$port/health")"
if [ "$keep" = 1 ]; then
  echo "left running; remove with: docker stack rm $stack && docker volume rm ${stack}_data"
fi
