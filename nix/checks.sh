#!/usr/bin/env bash
# Nix checks that run without nixpkgs (only Debian's nix-bin): every .nix file parses, the pure
# renderer turns the example settings into a config `ci-warm config check` accepts, and the
# units it produces pass `systemd-analyze verify`.
set -euo pipefail
cd "$(dirname "$0")/.."

ci_warm=${CI_WARM_BIN:-$PWD/target/debug/ci-warm}
[ -x "$ci_warm" ] || cargo build --quiet --locked -p ci-warm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "-- parsing every .nix file"
find . -name '*.nix' -not -path './target/*' -print0 | while IFS= read -r -d '' f; do
  nix-instantiate --parse "$f" >/dev/null || { echo "syntax error in $f" >&2; exit 1; }
done

echo "-- rendering the example settings and checking the config"
render() {
  nix-instantiate --eval --strict --json -E "
    let r = import ./modules/render.nix;
        cfg = r.withDefaults (import ./nix/example-settings.nix);
    in $1"
}
render 'r.config cfg' > "$work/config.json"
"$ci_warm" config check "$work/config.json" >/dev/null

echo "-- rendering the units and verifying them with systemd-analyze"
render "let u = r.units { inherit cfg; exe = \"$ci_warm\"; configFile = \"$work/config.json\"; systemctl = \"$(command -v systemctl || echo /bin/systemctl)\"; };
        in (builtins.mapAttrs (_: r.unitText \"service\") u.services)
           // builtins.listToAttrs (map (n: { name = n + \".timer\"; value = r.unitText \"timer\" u.timers.\${n}; }) (builtins.attrNames u.timers))" \
  > "$work/units.json"
mkdir -p "$work/units"
python3 - "$work/units.json" "$work/units" <<'PY'
import json, sys, os
units = json.load(open(sys.argv[1]))
for name, text in units.items():
    fname = name if name.endswith(".timer") else name + ".service"
    with open(os.path.join(sys.argv[2], fname), "w") as f:
        f.write(text)
print(f"   {len(units)} units: " + ", ".join(sorted(units)))
PY
# docker.service does not exist on a machine whose dockerd is started by hand: give verify a stub.
if ! systemctl cat docker.service >/dev/null 2>&1; then
  printf '[Unit]\nDescription=stub for verification\n[Service]\nExecStart=/bin/true\n' > "$work/units/docker.service"
fi
out=$(cd "$work/units" && SYSTEMD_UNIT_PATH="$work/units:" systemd-analyze verify --man=no ./*.service ./*.timer 2>&1) || {
  echo "$out" >&2; exit 1; }
# verify exits 0 on some problems; treat any line about our units as a failure.
if printf '%s\n' "$out" | grep -E 'ci-warm' >&2; then exit 1; fi
echo "-- nix checks passed"
