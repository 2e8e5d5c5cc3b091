# Example `services.ci-warm` settings, as a host would write them (README's host example, with
# every kind of unit switched on). nix/checks.sh renders them through modules/render.nix, has
# `ci-warm config check` accept the config and `systemd-analyze verify` the units, and
# nix/module-check.nix evaluates the module itself on them.
{
  enable = true;
  ciDomain = "ci.example.org";
  # The README uses `abraPackage = pkgs.abra;`; without nixpkgs here, an absolute path.
  deployer = { kind = "abra"; abraExecutable = "/run/current-system/sw/bin/abra"; server = "ci.example.org"; };
  traefik = {
    enable = true;
    domain = "traefik.ci.example.org";
    probes = [ { url = "http://127.0.0.1:8082/ping"; bodyContains = "OK"; } ];
  };
  keycloak = {
    enable = true;
    domain = "sso.ci.example.org";
    adminPasswordFile = "/run/secrets/keycloak-admin-password";
    healthTimeoutSecs = 600;
    reap.enable = true;
    liveRuns.stackPattern = "ci-{run}_*";
  };
  apps.demo = {
    repo = "/srv/recipes/demo";
    domain = "demo.ci.example.org";
    envFile = "/etc/ci-warm/demo.env";
    approved = [ "2.0.0+2.0.0" ];
    probes = [ { url = "http://127.0.0.1:18080/health"; } ];
    onCalendar = "*:0/30";
  };
  canonicals.nextcloud = {
    version = "10.7.1+31.0.2";
    probes = [ { url = "https://warm-nextcloud.ci.example.org/status.php"; connectTo = "127.0.0.1"; bodyContains = "installed"; } ];
  };
  # Free-form: a key of docs/configuration.md that has no typed option, merged under them.
  settings.apps.demo.allow_prerelease = true;
  alerts.onAlert = [ "/run/current-system/sw/bin/logger" "-t" "ci-warm-alert" ];
  credentials.chat-token = "/run/secrets/chat-token";
  metricsFile = "/var/lib/prometheus-node-exporter/ci-warm.prom";
  disk = { warnFreePercent = 20; criticalFreePercent = 5; prune.enable = true; };
  sweep = {
    enable = true;
    maxTests = 3;
    coldCommand = [ "/run/current-system/sw/bin/ci-cold-test" "--recipe" "{recipe}" "--version" "{version}" "--run" "{run}" ];
    readWritePaths = [ "/var/lib/ci-runs" ];
  };
}
