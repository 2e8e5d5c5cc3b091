# The pure part of the services.ci-warm module: option values in, JSON config and unit
# definitions out. It uses only builtins, so `nix-instantiate --eval --strict` can check it on a
# machine without nixpkgs (nix/checks.sh does), and the module and the checks render the very
# same units.
#
# Arguments:
#   cfg         the evaluated `services.ci-warm` option values
#   exe         absolute path of the ci-warm binary
#   configFile  store path (or any path) of the rendered config JSON
let
  inherit (builtins)
    attrNames concatStringsSep filter isAttrs isBool isList listToAttrs map mapAttrs replaceStrings
    toString;

  # Drops nulls so the JSON only carries what the operator set; ci-warm fills in defaults.
  clean = attrs: builtins.removeAttrs attrs (filter (n: attrs.${n} == null) (attrNames attrs));

  probeJSON = p: clean {
    inherit (p) url status host;
    body_contains = p.bodyContains;
  };

  appJSON = name: a: clean {
    inherit (a) preset recipe repo domain stack stateful approved;
    env_file = a.envFile;
    track = if a.pinnedVersion == null then "latest" else { pinned = a.pinnedVersion; };
    initial_version = a.initialVersion;
    probes = map probeJSON a.probes;
    health_timeout_secs = a.healthTimeoutSecs;
  };

  canonicalJSON = recipe: c: clean {
    inherit (c) version repo domain stack approved;
    env_file = c.envFile;
    probes = map probeJSON c.probes;
    health_timeout_secs = c.healthTimeoutSecs;
  };

  # The convenience options become ordinary apps with their preset.
  conveniences = cfg:
    (if cfg.traefik.enable then {
      traefik = cfg.traefik // { preset = "traefik"; recipe = cfg.traefik.recipe; };
    } else { })
    // (if cfg.keycloak.enable then {
      keycloak = builtins.removeAttrs cfg.keycloak [ "adminPasswordFile" "adminUser" "url" "enable" ]
        // { preset = "keycloak"; };
    } else { });

  allApps = cfg: conveniences cfg // cfg.apps;

  unitName = app: "ci-warm-${app}";
in
rec {
  inherit unitName;

  # Option defaults, shared with the module so they live in one place.
  defaults = {
    enable = false;
    stateDir = "/var/lib/ci-warm";
    ciDomain = null;
    deployer = { kind = "stack"; abraExecutable = "abra"; server = null; abraDir = "/root/.abra"; };
    health = { timeoutSecs = 300; intervalMs = 2000; };
    gate = { manualMigrationPhrases = [ ]; };
    snapshot = { reserveBytes = 1073741824; reservePercent = 5; };
    alerts = { onAlert = null; };
    metricsFile = null;
    disk = { warnFreePercent = 15; criticalFreePercent = 5; dockerRoot = "/var/lib/docker"; pruneSeenAlertsDays = 30; };
    apps = { };
    traefik = appDefaults // { enable = false; recipe = "traefik"; domain = null; };
    keycloak = appDefaults // { enable = false; recipe = "keycloak"; domain = null; url = null; adminUser = "admin"; adminPasswordFile = null; };
    canonicals = { };
    sweep = { enable = false; onCalendar = "*-*-* 02:00:00"; maxTests = 5; coldCommand = [ ]; };
  };
  appDefaults = {
    preset = "custom";
    repo = null;
    stack = null;
    envFile = null;
    stateful = null;
    pinnedVersion = null;
    initialVersion = null;
    approved = [ ];
    probes = [ ];
    healthTimeoutSecs = null;
    onCalendar = "hourly";
    randomizedDelaySec = "10m";
  };
  canonicalDefaults = {
    version = null;
    repo = null;
    domain = null;
    stack = null;
    envFile = null;
    approved = [ ];
    probes = [ ];
    healthTimeoutSecs = null;
    onCalendar = "hourly";
    randomizedDelaySec = "10m";
  };
  probeDefaults = { status = 200; bodyContains = null; host = null; };

  # Fills in defaults the way the module system would (for evaluation without nixpkgs).
  withDefaults = cfg:
    let
      merge = d: v: if isAttrs d && isAttrs v then d // mapAttrs (n: x: if d ? ${n} then merge d.${n} x else x) v else v;
      app = a: merge appDefaults a // { probes = map (merge probeDefaults) (a.probes or [ ]); };
      full = merge defaults cfg;
    in
    full // {
      apps = mapAttrs (_: app) (cfg.apps or { });
      canonicals = mapAttrs (_: c: merge canonicalDefaults c // { probes = map (merge probeDefaults) (c.probes or [ ]); }) (cfg.canonicals or { });
      traefik = full.traefik // { probes = map (merge probeDefaults) full.traefik.probes; };
      keycloak = full.keycloak // { probes = map (merge probeDefaults) full.keycloak.probes; };
    };

  # The JSON config file's content, as an attribute set.
  config = cfg: clean {
    state_dir = cfg.stateDir;
    ci_domain = cfg.ciDomain;
    deployer =
      if cfg.deployer.kind == "abra"
      then { kind = "abra"; abra = cfg.deployer.abraExecutable; server = cfg.deployer.server; }
      else { kind = "stack"; };
    health = { timeout_secs = cfg.health.timeoutSecs; interval_ms = cfg.health.intervalMs; };
    gate = { manual_migration_phrases = cfg.gate.manualMigrationPhrases; };
    snapshot = { reserve_bytes = cfg.snapshot.reserveBytes; reserve_percent = cfg.snapshot.reservePercent; };
    alerts = clean { on_alert = cfg.alerts.onAlert; };
    metrics_file = cfg.metricsFile;
    disk = {
      warn_free_percent = cfg.disk.warnFreePercent;
      critical_free_percent = cfg.disk.criticalFreePercent;
      docker_root = cfg.disk.dockerRoot;
      prune_seen_alerts_days = cfg.disk.pruneSeenAlertsDays;
    };
    apps = mapAttrs appJSON (allApps cfg);
    canonicals = mapAttrs canonicalJSON cfg.canonicals;
    sweep = { max_tests = cfg.sweep.maxTests; cold_command = cfg.sweep.coldCommand; };
    keycloak =
      if cfg.keycloak.enable && cfg.keycloak.adminPasswordFile != null then {
        url = cfg.keycloak.url;
        admin_user = cfg.keycloak.adminUser;
        # The password reaches the unit through LoadCredential, never the store.
        admin_password = { credential = "keycloak-admin-password"; };
      } else null;
  };

  # Every app the timers reconcile, with its schedule.
  schedules = cfg:
    (mapAttrs (_: a: { inherit (a) onCalendar randomizedDelaySec; }) (allApps cfg))
    // listToAttrs (map (recipe: {
      name = "warm-${recipe}";
      value = { inherit (cfg.canonicals.${recipe}) onCalendar randomizedDelaySec; };
    }) (attrNames cfg.canonicals));

  credentials = cfg:
    if cfg.keycloak.enable && cfg.keycloak.adminPasswordFile != null
    then [ "keycloak-admin-password:${cfg.keycloak.adminPasswordFile}" ]
    else [ ];

  # Systemd hardening shared by every ci-warm unit. Docker needs the socket; snapshots and
  # restores write volume trees with any owner, hence the file capabilities.
  hardening = cfg: {
    ProtectSystem = "strict";
    ReadWritePaths = [ cfg.stateDir "/run/docker.sock" "${cfg.disk.dockerRoot}/volumes" ]
      ++ (if cfg.deployer.kind == "abra" then [ cfg.deployer.abraDir ] else [ ]);
    ProtectHome = if cfg.deployer.kind == "abra" then "read-only" else "yes";
    PrivateTmp = "yes";
    NoNewPrivileges = "yes";
    ProtectKernelTunables = "yes";
    ProtectKernelModules = "yes";
    ProtectKernelLogs = "yes";
    ProtectControlGroups = "yes";
    ProtectClock = "yes";
    ProtectHostname = "yes";
    RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
    RestrictNamespaces = "yes";
    RestrictRealtime = "yes";
    RestrictSUIDSGID = "no"; # restoring a volume must recreate setuid files exactly
    LockPersonality = "yes";
    MemoryDenyWriteExecute = "yes";
    SystemCallArchitectures = "native";
    CapabilityBoundingSet = [
      "CAP_CHOWN" "CAP_DAC_OVERRIDE" "CAP_DAC_READ_SEARCH" "CAP_FOWNER" "CAP_FSETID"
      "CAP_MKNOD" "CAP_SYS_ADMIN"
    ];
    UMask = "0027";
  };

  # name -> { description, after, wants, wantedBy?, serviceConfig } for every service, and
  # name -> { description, wantedBy, timerConfig } for every timer.
  units = { cfg, exe, configFile, systemctl }:
    let
      base = {
        Type = "oneshot";
        Environment = [ "CI_WARM_CONFIG=${configFile}" "HOME=${cfg.stateDir}" ];
        LoadCredential = credentials cfg;
      } // hardening cfg;
      reconcileService = app: {
        name = unitName app;
        value = {
          description = "ci-warm: reconcile warm app ${app}";
          after = [ "docker.service" "network-online.target" ];
          wants = [ "network-online.target" ];
          requires = [ "docker.service" ];
          serviceConfig = base // {
            # 0 ok/no-op/held, 4 rolled back and recovered: both are a finished job; 5 (not
            # recovered) and others fail the unit so monitoring sees it.
            ExecStart = "${exe} reconcile --wait ${app}";
            SuccessExitStatus = [ "4" ];
          };
        };
      };
      reconcileTimer = app: s: {
        name = unitName app;
        value = {
          description = "ci-warm: periodic reconcile of ${app}";
          wantedBy = [ "timers.target" ];
          timerConfig = {
            OnCalendar = s.onCalendar;
            Persistent = "true";
            RandomizedDelaySec = s.randomizedDelaySec;
          };
        };
      };
      sched = schedules cfg;
      apps = attrNames sched;
    in
    {
      services = listToAttrs (map reconcileService apps)
        // {
          # Restarted by nixos-rebuild when the config changes (restartTriggers in the module);
          # it kicks off every reconcile so a config change takes effect at once.
          "ci-warm-apply" = {
            description = "ci-warm: reconcile every app after a configuration change";
            after = [ "docker.service" ];
            wantedBy = [ "multi-user.target" ];
            serviceConfig = {
              Type = "oneshot";
              RemainAfterExit = "yes";
              ExecStart = "${systemctl} start --no-block ${concatStringsSep " " (map (a: "${unitName a}.service") apps)}";
            };
          };
        }
        // (if cfg.sweep.enable then {
          "ci-warm-sweep" = {
            description = "ci-warm: nightly cold sweep of enrolled recipes";
            after = [ "docker.service" "network-online.target" ];
            wants = [ "network-online.target" ];
            requires = [ "docker.service" ];
            serviceConfig = base // {
              ExecStart = "${exe} sweep --max-tests ${toString cfg.sweep.maxTests}";
            };
          };
        } else { });
      timers = mapAttrs (a: s: (reconcileTimer a s).value) (listToAttrs (map (a: { name = unitName a; value = sched.${a}; }) apps))
        // (if cfg.sweep.enable then {
          "ci-warm-sweep" = {
            description = "ci-warm: nightly cold sweep";
            wantedBy = [ "timers.target" ];
            timerConfig = { OnCalendar = cfg.sweep.onCalendar; Persistent = "true"; RandomizedDelaySec = "30m"; };
          };
        } else { });
    };

  # Renders one unit as systemd INI text (used by the checks; NixOS renders its own).
  unitText = kind: u:
    let
      value = v: if isList v then concatStringsSep " " (map toString v) else if isBool v then (if v then "yes" else "no") else toString v;
      lines = section: attrs: [ "[${section}]" ]
        ++ map (k: "${k}=${value attrs.${k}}") (filter (k: attrs.${k} != [ ] && attrs.${k} != null) (attrNames attrs));
      unitSec = clean {
        Description = u.description;
        After = u.after or null;
        Wants = u.wants or null;
        Requires = u.requires or null;
      };
      installSec = if u ? wantedBy then [ "" ] ++ lines "Install" { WantedBy = u.wantedBy; } else [ ];
      body = if kind == "service" then lines "Service" (multi u.serviceConfig) else lines "Timer" u.timerConfig;
      # Environment and LoadCredential take one assignment per item.
      multi = sc: builtins.removeAttrs sc [ "Environment" "LoadCredential" ];
      extra = if kind == "service"
        then map (e: "Environment=${e}") (u.serviceConfig.Environment or [ ])
          ++ map (c: "LoadCredential=${c}") (u.serviceConfig.LoadCredential or [ ])
        else [ ];
    in
    concatStringsSep "\n" (lines "Unit" unitSec ++ [ "" ] ++ body ++ extra ++ installSec) + "\n";

  # Stack names two apps would share, for the module's assertion.
  duplicateStacks = cfg:
    let
      stackOf = name: a: if a.stack != null then a.stack else replaceStrings [ "." ] [ "_" ] a.domain;
      stacks = map (n: stackOf n (allApps cfg).${n}) (attrNames (allApps cfg));
      dups = filter (s: builtins.length (filter (x: x == s) stacks) > 1) stacks;
    in
    builtins.attrNames (listToAttrs (map (s: { name = s; value = true; }) dups));
}
