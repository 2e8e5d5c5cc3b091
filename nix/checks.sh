#!/usr/bin/env bash
# Nix checks that run without nixpkgs (only Debian's nix-bin), in the test command:
#   1. every .nix file parses;
#   2. the module's option declarations are complete and its config part evaluates, with the
#      promised restart and credential wiring (nix/module-check.nix);
#   3. the example settings pass every assertion, and every impossible setting in
#      nix/assertion-cases.nix is refused with its message;
#   4. the pure renderer turns the example settings into a config `ci-warm config check` accepts;
#   5. the units it produces pass `systemd-analyze verify`;
#   6. self-test: the checks fail on broken copies of the tree (a syntax error, a rejected
#      config, a failing assertion, an undocumented option, a bad unit).
#
# Usage: nix/checks.sh [--no-self-test] [TREE]   (TREE defaults to this repository)
set -euo pipefail

self_test=1
if [ "${1:-}" = "--no-self-test" ]; then self_test=0; shift; fi
repo=$(cd "$(dirname "$0")/.." && pwd)
tree=$(cd "${1:-$repo}" && pwd)
cd "$tree"

# Debian's nix-bin names a build-users group that does not exist; evaluation never builds.
export NIX_CONFIG="build-users-group =
${NIX_CONFIG:-}"
ci_warm=${CI_WARM_BIN:-$repo/target/debug/ci-warm}
[ -x "$ci_warm" ] || (cd "$repo" && cargo build --quiet --locked -p ci-warm)
export CI_WARM_BIN=$ci_warm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() { echo "nix checks: $*" >&2; exit 1; }
eval_json() { nix-instantiate --eval --strict --json -E "$1"; }

echo "-- parsing every .nix file"
count=0
while IFS= read -r -d '' f; do
  nix-instantiate --parse "$f" >/dev/null 2>"$work/parse.err" || { cat "$work/parse.err" >&2; fail "syntax error in $f"; }
  count=$((count + 1))
done < <(find . -name '*.nix' -not -path './target/*' -not -path './.git/*' -print0)
[ "$count" -gt 0 ] || fail "no .nix files found under $tree"
echo "   $count files"

echo "-- option declarations and the module's config (nix/module-check.nix)"
eval_json 'import ./nix/module-check.nix { }' >"$work/module.json" || fail "nix/module-check.nix does not evaluate"
python3 - "$work/module.json" <<'PY' || fail "the module check found problems"
import json, sys
problems = json.load(open(sys.argv[1]))
for p in problems:
    print(f"   {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY

echo "-- the README's host example through the same module check"
if [ -f README.md ]; then
  python3 - README.md "$work/readme-settings.nix" <<'PY' || fail "cannot find the README's services.ci-warm example"
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"services\.ci-warm = \{", text)
if not m:
    sys.exit("no `services.ci-warm = {` in the README")
depth, i = 0, m.end() - 1
while True:
    depth += {"{": 1, "}": -1}.get(text[i], 0)
    if depth == 0:
        break
    i += 1
block = text[m.end() - 1 : i + 1]
# The README takes abra from nixpkgs, which is not here: a stand-in package.
stub = '{ abra = { outPath = "/nix/store/00000000000000000000000000000000-abra"; meta.mainProgram = "abra"; }; }'
open(sys.argv[2], "w").write(f"let pkgs = {stub}; in\n{block}\n")
PY
  eval_json "import ./nix/module-check.nix { settings = import $work/readme-settings.nix; }" >"$work/readme.json" \
    || fail "the README's host example does not evaluate with the module"
  python3 - "$work/readme.json" <<'PY' || fail "the README's host example has problems"
import json, sys
problems = json.load(open(sys.argv[1]))
for p in problems:
    print(f"   {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
  eval_json "let r = import ./modules/render.nix; in r.config (r.withDefaults (import $work/readme-settings.nix))" \
    >"$work/readme-config.json" || fail "the README's host example does not render"
  "$ci_warm" config check --static "$work/readme-config.json" >/dev/null 2>"$work/check.err" || {
    cat "$work/check.err" >&2; fail "ci-warm config check rejected the README's host example"; }
fi

echo "-- assertions: the example passes, every impossible setting is refused"
eval_json '
  let r = import ./modules/render.nix;
      failing = s: map (a: a.message) (builtins.filter (a: !a.assertion) (r.assertions (r.withDefaults s)));
      contains = n: s: builtins.replaceStrings [ n ] [ "" ] s != s;
  in {
    example = failing (import ./nix/example-settings.nix);
    cases = map (c: { inherit (c) name expect; messages = failing c.settings; }) (import ./nix/assertion-cases.nix);
  }' >"$work/assertions.json" || fail "the assertion cases do not evaluate"
python3 - "$work/assertions.json" <<'PY' || fail "assertions misbehave"
import json, sys
r = json.load(open(sys.argv[1]))
bad = [f"the example settings fail: {m}" for m in r["example"]]
for c in r["cases"]:
    if not any(c["expect"] in m for m in c["messages"]):
        bad.append(f"{c['name']}: no assertion message contains {c['expect']!r}; got {c['messages']}")
for b in bad:
    print(f"   {b}", file=sys.stderr)
print(f"   {len(r['cases'])} impossible settings refused")
sys.exit(1 if bad else 0)
PY

render() {
  eval_json "
    let r = import ./modules/render.nix;
        cfg = r.withDefaults (import ./nix/example-settings.nix);
    in $1"
}

echo "-- rendering the example settings and checking the config"
render 'r.config cfg' >"$work/config.json" || fail "the config does not render"
"$ci_warm" config check --static "$work/config.json" >/dev/null 2>"$work/check.err" || {
  cat "$work/check.err" >&2; fail "ci-warm config check rejected the rendered config"; }

echo "-- rendering the units and verifying them with systemd-analyze"
systemctl=$(command -v systemctl || echo /bin/systemctl)
render "let u = r.units { inherit cfg; exe = \"$ci_warm\"; configFile = \"$work/config.json\"; systemctl = \"$systemctl\"; };
        in builtins.listToAttrs (
             map (n: { name = n + \".service\"; value = r.unitText \"service\" u.services.\${n}; }) (builtins.attrNames u.services)
             ++ map (n: { name = n + \".timer\"; value = r.unitText \"timer\" u.timers.\${n}; }) (builtins.attrNames u.timers))" \
  >"$work/units.json" || fail "the units do not render"
mkdir -p "$work/units"
python3 - "$work/units.json" "$work/units" <<'PY' || fail "the example does not render the expected units"
import json, os, sys
units = json.load(open(sys.argv[1]))
for name, text in units.items():
    with open(os.path.join(sys.argv[2], name), "w") as f:
        f.write(text)
print(f"   {len(units)} units: " + ", ".join(sorted(units)))
# The example enables every kind of unit; each must be there.
want = ["ci-warm-apply.service", "ci-warm-demo.service", "ci-warm-demo.timer", "ci-warm-traefik.timer",
        "ci-warm-keycloak.timer", "ci-warm-warm-nextcloud.timer", "ci-warm-sweep.service",
        "ci-warm-sweep.timer", "ci-warm-disk-check.timer", "ci-warm-disk-prune.timer",
        "ci-warm-realm-reap.service", "ci-warm-realm-reap.timer"]
missing = [u for u in want if u not in units]
if missing:
    print(f"   missing: {missing}", file=sys.stderr)
    sys.exit(1)
# Secrets only as credentials: the password file is named in LoadCredential and nowhere else.
for name, text in units.items():
    for line in text.splitlines():
        if "/run/secrets/" in line and not line.startswith("LoadCredential="):
            print(f"   {name}: a secret path outside LoadCredential: {line}", file=sys.stderr)
            sys.exit(1)
PY
# docker.service does not exist on a machine whose dockerd is started by hand: give verify a stub.
if ! systemctl cat docker.service >/dev/null 2>&1; then
  printf '[Unit]\nDescription=stub for verification\n[Service]\nExecStart=/bin/true\n' >"$work/units/docker.service"
fi
out=$(cd "$work/units" && SYSTEMD_UNIT_PATH="$work/units:" systemd-analyze verify --man=no ./ci-warm-* 2>&1) || {
  echo "$out" >&2; fail "systemd-analyze verify rejected the units"; }
# verify exits 0 on some problems (an unparsable value is "ignored"): any line about our units fails.
if printf '%s\n' "$out" | grep -E 'ci-warm' >&2; then fail "systemd-analyze verify rejected the units"; fi

if [ "$self_test" = 1 ]; then
  echo "-- self-test: broken copies of the tree must fail"
  # mutate FILE PYTHON-REPLACEMENTS: the replacement must apply, or the self-test proves nothing.
  broken() {
    local name=$1 expect=$2 file=$3 old=$4 new=$5 copy="$work/broken"
    rm -rf "$copy" && mkdir -p "$copy" && cp -r "$tree/modules" "$tree/nix" "$tree/flake.nix" "$tree/README.md" "$copy/"
    python3 - "$copy/$file" "$old" "$new" <<'PY' || fail "self-test '$name': cannot break $file"
import sys
path, old, new = sys.argv[1:]
try:
    text = open(path).read()
except FileNotFoundError:
    text = ""
if old and old not in text:
    sys.exit(f"{old!r} not in {path}")
open(path, "w").write(text.replace(old, new, 1) if old else new)
PY
    local out
    if out=$("$repo/nix/checks.sh" --no-self-test "$copy" 2>&1); then
      fail "self-test '$name': the checks passed a broken tree"
    fi
    grep -qF -- "$expect" <<<"$out" || { echo "$out" >&2; fail "self-test '$name': failed, but not with '$expect'"; }
    echo "   $name: refused"
  }
  broken "syntax error" "syntax error in ./nix/tests/broken.nix" \
    nix/tests/broken.nix "" '{ pkgs, ... }: { oops = ; }'
  broken "rejected config" "ci-warm config check rejected the rendered config" \
    nix/example-settings.nix 'approved = [ "2.0.0+2.0.0" ];' 'approved = [ "not-a-version" ];'
  broken "failing assertion" "services.ci-warm.apps.demo.domain must be set" \
    nix/example-settings.nix 'domain = "demo.ci.example.org";' ''
  broken "undocumented option" "services.ci-warm.keycloak.adminUser: no description" \
    modules/ci-warm.nix 'description = "Admin user of the master realm.";' ''
  broken "README example with an undeclared option" "undeclared option(s) services.ci-warm.metricFile" \
    README.md 'metricsFile = "/var/lib/prometheus' 'metricFile = "/var/lib/prometheus'
  broken "bad unit" "systemd-analyze verify rejected the units" \
    nix/example-settings.nix 'onCalendar = "*:0/30";' 'onCalendar = "every blue moon";'
fi
echo "-- nix checks passed"
