#!/usr/bin/env bash
# Nix checks that run without nixpkgs (only Debian's nix-bin), in the test command:
#   1. every .nix file parses;
#   2. the module's option declarations are complete and its config part evaluates, with the
#      promised restart and credential wiring (nix/module-check.nix);
#   3. the example settings pass every assertion, and every impossible setting in
#      nix/assertion-cases.nix is refused with its message;
#   4. the pure renderer turns the example settings into a config `ci-warm config check` accepts;
#   5. the units it produces pass `systemd-analyze verify`, with the ci-warm executable in a
#      directory whose name has a space and a `%` (systemd must find exactly that file), and
#      every ExecStart=, unquoted by systemd's rules, is exactly the argv it was made from;
#   6. every system call the snapshot engine makes is allowed by the restoring units' filter
#      (`systemd-analyze syscall-filter`), and the state dir goes to StateDirectory= or tmpfiles;
#   7. the option list in docs/configuration.md is the module's (--write-option-docs rewrites it);
#   8. self-test: the checks fail on broken copies of the tree (a syntax error, a rejected
#      config, a failing assertion, an undocumented option, a bad unit).
#
# Usage: nix/checks.sh [--no-self-test] [TREE]   (TREE defaults to this repository)
set -euo pipefail

self_test=1 write_docs=0
if [ "${1:-}" = "--no-self-test" ]; then self_test=0; shift; fi
if [ "${1:-}" = "--write-option-docs" ]; then write_docs=1; self_test=0; shift; fi
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

echo "-- the option list in docs/configuration.md"
eval_json 'import ./nix/module-check.nix { report = "options"; }' >"$work/options.json" || fail "the option list does not evaluate"
if [ "$write_docs" = 1 ]; then
  python3 nix/option-docs.py write "$work/options.json" docs/configuration.md
  echo "   rewritten"
fi
python3 nix/option-docs.py check "$work/options.json" docs/configuration.md || fail "docs/configuration.md does not list the module's options"
echo "   $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/options.json") options documented"

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

echo "-- types: every ill-typed setting is refused (nix/type-cases.nix)"
eval_json 'map (c: { inherit (c) name expect; problems = import ./nix/module-check.nix { inherit (c) settings; }; }) (import ./nix/type-cases.nix)' \
  >"$work/types.json" || fail "the type cases do not evaluate"
python3 - "$work/types.json" <<'PY' || fail "types misbehave"
import json, sys
bad = [f"{c['name']}: no problem contains {c['expect']!r}; got {c['problems']}"
       for c in json.load(open(sys.argv[1])) if not any(c["expect"] in p for p in c["problems"])]
for b in bad:
    print(f"   {b}", file=sys.stderr)
print(f"   {len(json.load(open(sys.argv[1])))} ill-typed settings refused")
sys.exit(1 if bad else 0)
PY

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
# The executable's directory has a space and a `%` in its name: ExecStart= must carry that argv
# item exactly (a `%` left alone is a specifier, a space splits the item).
odd="$work/bin dir 100%"
mkdir -p "$odd" && ln -s "$ci_warm" "$odd/ci-warm"
exe_nix=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]).replace("$", "\\$"))' "$odd/ci-warm")
render "let u = r.units { inherit cfg; exe = $exe_nix; configFile = \"$work/config.json\"; systemctl = \"$systemctl\"; };
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

echo "-- ExecStart= escaping: each argv item survives systemd's unquoting exactly"
# The argv items a unit is made from, and odd items through the renderer's escaping function.
odd_items='[ "a b%c" "100%" "%n" "$HOME" "$$" "q\"uote" "back\\slash" ";" "tab\there" "x;y" "" "ünï" ]'
eval_json "let r = import ./modules/render.nix; items = $odd_items; in { inherit items; line = r.escapeSystemdExecArgs items; }" \
  >"$work/escape.json" || fail "the escaping function does not evaluate"
python3 - "$work/units" "$odd/ci-warm" "$work/escape.json" "$systemctl" <<'PY' || fail "ExecStart= escaping is wrong"
import json, os, re, sys
units_dir, exe, escape_json, systemctl = sys.argv[1:]

def unquote(line):
    """systemd.syntax(7)/systemd.service(5) ExecStart= parsing: words split on whitespace,
    double quotes group, C escapes inside quotes, then %% -> % and $$ -> $ (a lone % or $
    would be a specifier or a variable, which the escaping must never leave)."""
    words, i, n = [], 0, len(line)
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        word = ""
        while i < n and line[i] not in " \t":
            if line[i] == '"':
                i += 1
                while line[i] != '"':
                    if line[i] == "\\":
                        i += 1
                        c = line[i]
                        if c == "u":
                            word += chr(int(line[i + 1:i + 5], 16)); i += 4
                        elif c == "x":
                            word += chr(int(line[i + 1:i + 3], 16)); i += 2
                        else:
                            word += {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/"}.get(c, c)
                    else:
                        word += line[i]
                    i += 1
                i += 1
            else:
                word += line[i]; i += 1
        words.append(word)
    out = []
    for w in words:
        if re.search(r"(?<!%)%(?!%)", w.replace("%%", "")) or re.search(r"\$(?!\$)", w.replace("$$", "")):
            sys.exit(f"unescaped specifier or variable in {w!r}")
        out.append(w.replace("%%", "\0").replace("%", "").replace("\0", "%").replace("$$", "\0").replace("\0", "$"))
    return out

e = json.load(open(escape_json))
got = unquote(e["line"])
if got != e["items"]:
    sys.exit(f"escapeSystemdExecArgs: {e['items']!r} came back as {got!r}")
print(f"   {len(got)} odd argv items survive ({e['line'][:40]}...)")

expect = {"ci-warm-demo.service": [exe, "reconcile", "--wait", "demo"],
          "ci-warm-sweep.service": [exe, "sweep"],
          "ci-warm-realm-reap.service": [exe, "realm", "reap", "--live-from-swarm"]}
for name, argv in expect.items():
    line = [l for l in open(os.path.join(units_dir, name)).read().splitlines() if l.startswith("ExecStart=")]
    got = unquote(line[0][len("ExecStart="):])
    if got != argv:
        sys.exit(f"{name}: ExecStart= is {got!r}, not {argv!r}")
print(f"   ExecStart= of {', '.join(expect)} is exactly its argv (executable: {exe!r})")
PY

echo "-- privileges: the restoring units allow every call the snapshot engine makes"
python3 - "$work/units" <<'PY' || fail "a unit's system-call filter refuses what its operations need"
import os, re, subprocess, sys
units_dir = sys.argv[1]
groups = {}
cur = None
for line in subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True, text=True, check=True).stdout.splitlines():
    if line.startswith("@"):  # a group's name starts a line; its members are indented
        cur = line.strip(); groups[cur] = []
        continue
    line = line.strip()
    if line and not line.startswith("#") and cur:
        groups[cur].append(line)
def expand(item, seen=()):
    if item.startswith("@"):
        return set().union(*[expand(x, seen + (item,)) for x in groups.get(item, []) if x not in seen])
    return {item}
def allowed(unit_text):
    entries = [l.split("=", 1)[1] for l in unit_text.splitlines() if l.startswith("SystemCallFilter=")]
    allow, deny = set(), set()
    for e in entries:
        for w in e.split():
            (deny if w.startswith("~") else allow).update(expand(w.lstrip("~")))
    return allow - deny
# What snapshot/src calls (libc/nix crate), by the syscall it ends in on x86_64 and aarch64.
restore = ["mknodat", "fchownat", "lchown", "fchmodat", "utimensat", "lsetxattr", "lgetxattr", "llistxattr",
           "lremovexattr", "copy_file_range", "ioctl", "lseek", "syncfs", "renameat2", "renameat",
           "linkat", "symlinkat", "mkdirat", "unlinkat", "readlinkat", "fallocate", "statfs", "openat",
           "fsync", "newfstatat", "statx", "getdents64", "capget", "capset"]
common = ["statfs", "openat", "renameat2", "fsync", "connect", "socket", "execve", "clone3", "wait4",
          "pipe2", "flock", "setsid", "kill", "prlimit64", "sched_getaffinity"]
bad = []
for name in sorted(os.listdir(units_dir)):
    if not name.endswith(".service") or name == "docker.service":
        continue
    text = open(os.path.join(units_dir, name)).read()
    ok = allowed(text)
    if not ok:
        bad.append(f"{name}: no SystemCallFilter allow-list"); continue
    need = common + (restore if "CAP_MKNOD" in text else [])
    missing = [s for s in need if s not in ok]
    if missing:
        bad.append(f"{name}: its filter refuses {missing}")
    if "CAP_MKNOD" not in text and ("chown" in ok or "setuid" in ok):
        bad.append(f"{name}: does not restore, yet may chown/setuid")
for b in bad:
    print(f"   {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY

echo "-- the state dir: StateDirectory= under /var/lib, tmpfiles elsewhere"
eval_json '
  let r = import ./modules/render.nix;
      units = s: (r.units { cfg = r.withDefaults (import ./nix/example-settings.nix // s); exe = "/x"; configFile = "/c"; systemctl = "/s"; }).services;
      dirs = s: map (u: u.serviceConfig.StateDirectory or null) (builtins.attrValues (removeAttrs (units s) [ "ci-warm-apply" ]));
  in { default = dirs { }; elsewhere = dirs { stateDir = "/srv/ci-warm"; }; nested = dirs { stateDir = "/var/lib/ci/warm"; }; }' \
  >"$work/statedir.json" || fail "the state dir variants do not render"
python3 - "$work/statedir.json" <<'PY' || fail "the state dir is not made the way the module says"
import json, sys
d = json.load(open(sys.argv[1]))
ok = set(d["default"]) == {"ci-warm"} and set(d["elsewhere"]) == {None} and set(d["nested"]) == {"ci/warm"}
print(f"   /var/lib/ci-warm -> StateDirectory=ci-warm; /srv/ci-warm -> tmpfiles; /var/lib/ci/warm -> ci/warm" if ok else f"   {d}")
sys.exit(0 if ok else 1)
PY

if [ "$self_test" = 1 ]; then
  echo "-- self-test: broken copies of the tree must fail"
  # mutate FILE PYTHON-REPLACEMENTS: the replacement must apply, or the self-test proves nothing.
  broken() {
    local name=$1 expect=$2 file=$3 old=$4 new=$5 copy="$work/broken"
    rm -rf "$copy" && mkdir -p "$copy" && cp -r "$tree/modules" "$tree/nix" "$tree/flake.nix" "$tree/README.md" "$tree/docs" "$copy/"
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
  broken "an option missing from the docs" "docs/configuration.md does not list the module's options" \
    modules/ci-warm.nix 'description = "Admin user of the master realm.";' 'description = "Admin user of the master realm (changed).";'
  broken "README example with an undeclared option" "undeclared option(s) services.ci-warm.metricFile" \
    README.md 'metricsFile = "/var/lib/prometheus' 'metricFile = "/var/lib/prometheus'
  broken "ExecStart= without %-escaping" "ExecStart= escaping is wrong" \
    modules/render.nix 'replaceStrings [ "%" "$" ] [ "%%" "$$" ]' 'replaceStrings [ "$" ] [ "$$" ]'
  broken "a capability a unit does not need" "ci-warm-disk-check: capabilities" \
    modules/render.nix 'privilege = "none";
          extra = { };
        }
        ++ optional cfg.disk.prune.enable' 'privilege = "restore";
          extra = { };
        }
        ++ optional cfg.disk.prune.enable'
  broken "a deny-list system-call filter" "SystemCallFilter is not an allow-list" \
    modules/render.nix 'SystemCallFilter = [ "@system-service" "~@privileged" ];
      RestrictSUIDSGID = "yes";
    };
  };' 'SystemCallFilter = [ "~@privileged" ];
      RestrictSUIDSGID = "yes";
    };
  };'
  broken "bad unit" "systemd-analyze verify rejected the units" \
    nix/example-settings.nix 'onCalendar = "*:0/30";' 'onCalendar = "every blue moon";'
fi
echo "-- nix checks passed"
