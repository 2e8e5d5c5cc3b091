# The pure part of the services.ci-warm module: option values in, JSON config, assertions and
# unit definitions out. It uses only builtins, so `nix-instantiate --eval --strict` can check it
# on a machine without nixpkgs (nix/checks.sh does), and the module and the checks render the
# very same config, assertions and units.
let
  inherit (builtins)
    all any attrNames concatLists concatStringsSep dirOf elem filter foldl' isAttrs isBool isList
    isString length listToAttrs map mapAttrs match replaceStrings stringLength substring toString;

  # Drops nulls so the JSON only carries what the operator set; ci-warm fills in defaults.
  clean = attrs: builtins.removeAttrs attrs (filter (n: attrs.${n} == null) (attrNames attrs));

  optionalAttrs = c: a: if c then a else { };
  optional = c: x: if c then [ x ] else [ ];
  mapAttrsToList = f: a: map (n: f n a.${n}) (attrNames a);
  hasPrefix = p: s: substring 0 (stringLength p) s == p;
  isAbsolute = p: isString p && hasPrefix "/" p;

  # The reconciler's names::check: app and recipe names become paths and unit names.
  validName = n:
    match "[a-z0-9][a-z0-9._-]*" n != null && stringLength n <= 64 && match ".*[.][.].*" n == null;

  probeJSON = p: clean {
    inherit (p) url status host;
    body_contains = p.bodyContains;
    connect_to = p.connectTo;
    ca_file = p.caFile;
    insecure = if p.insecure then true else null;
  };
  # null leaves the probes to ci-warm's defaults; [ ] is "no probes".
  probesJSON = ps: if ps == null then null else map probeJSON ps;

  appJSON = _: a: clean {
    inherit (a) preset recipe repo domain stack stateful approved;
    env_file = a.envFile;
    track = if a.pinnedVersion == null then "latest" else { pinned = a.pinnedVersion; };
    initial_version = a.initialVersion;
    probes = probesJSON a.probes;
    health_timeout_secs = a.healthTimeoutSecs;
  };

  canonicalJSON = _: c: clean {
    inherit (c) version repo domain stack approved;
    env_file = c.envFile;
    probes = probesJSON c.probes;
    health_timeout_secs = c.healthTimeoutSecs;
  };

  # The traefik and keycloak conveniences become ordinary apps with their preset.
  conveniences = cfg:
    optionalAttrs cfg.traefik.enable { traefik = cfg.traefik // { preset = "traefik"; }; }
    // optionalAttrs cfg.keycloak.enable { keycloak = cfg.keycloak // { preset = "keycloak"; }; };

  # Where an app was configured (relative to services.ci-warm), for messages.
  appPath = cfg: name:
    if (name == "traefik" && cfg.traefik.enable || name == "keycloak" && cfg.keycloak.enable)
      && !(cfg.apps ? ${name})
    then name else "apps.${name}";
  appOption = cfg: name: "services.ci-warm.${appPath cfg name}";

  allApps = cfg: conveniences cfg // cfg.apps;

  canonicalApp = recipe: "warm-${recipe}";

  canonicalDomain = cfg: recipe: c:
    if c.domain != null then c.domain
    else if cfg.ciDomain != null then "${canonicalApp recipe}.${cfg.ciDomain}"
    else null;

  stackOfDomain = d: replaceStrings [ "." ] [ "_" ] d;

  keycloakUrl = cfg:
    if cfg.keycloak.url != null then cfg.keycloak.url
    else if cfg.keycloak.enable && cfg.keycloak.domain != null then "https://${cfg.keycloak.domain}"
    else null;

  keycloakCredential = "keycloak-admin-password";

  # Unit names ci-warm uses for itself; an app of that name would collide with them.
  ownUnits = [ "apply" "sweep" "disk-check" "disk-prune" "realm-reap" ];

  unitName = app: "ci-warm-${app}";

  dedupe = l: attrNames (listToAttrs (map (x: { name = x; value = true; }) l));

  # nixpkgs' lib.recursiveUpdate: attribute sets merge, anything else is replaced by the right.
  recursiveUpdate = a: b:
    a // mapAttrs (n: v: if isAttrs v && isAttrs (a.${n} or null) then recursiveUpdate a.${n} v else v) b;

  # Leaves of `settings` that the typed options also render with another value, as
  # dotted JSON paths: the typed options win, so such a setting would be silently lost.
  overridden = prefix: settings: typed:
    concatLists (mapAttrsToList
      (n: v:
        let at = if prefix == "" then n else "${prefix}.${n}"; in
        if !(typed ? ${n}) then [ ]
        else if isAttrs v && isAttrs typed.${n} then overridden at v typed.${n}
        else if v == typed.${n} then [ ]
        else [ at ])
      settings);

  # Options typed `types.path`: a path literal (`/var/lib/ci-warm` without quotes) is turned
  # into its string here, never interpolated, so it is not copied into the store.
  pathOptions = cfg: cfg // {
    stateDir = toString cfg.stateDir;
    metricsFile = if cfg.metricsFile == null then null else toString cfg.metricsFile;
    deployer = cfg.deployer // { abraDir = toString cfg.deployer.abraDir; };
    disk = cfg.disk // { dockerRoot = toString cfg.disk.dockerRoot; };
    sweep = cfg.sweep // { readWritePaths = map toString cfg.sweep.readWritePaths; };
  };

  # nixpkgs' utils.escapeSystemdExecArg(s) (nixos/lib/utils.nix), with builtins only: each argv
  # item becomes a double-quoted C string (toJSON's escapes are a subset of what systemd
  # unquotes), `%` is doubled so it is no specifier and `$` so it is no variable. Spaces,
  # quotes, backslashes and `;` stay inside their item.
  escapeSystemdExecArg = arg:
    let
      s = if builtins.isPath arg then "${arg}"
        else if isString arg then arg
        else if builtins.isInt arg || builtins.isFloat arg then toString arg
        else throw "escapeSystemdExecArg only allows strings, paths and numbers";
    in
    replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON s);
  escapeSystemdExecArgs = args: concatStringsSep " " (map escapeSystemdExecArg args);
in
rec {
  inherit unitName canonicalApp escapeSystemdExecArg escapeSystemdExecArgs recursiveUpdate;

  # Option defaults, shared with the module so they live in one place.
  defaults = {
    enable = false;
    checkConfig = true;
    settings = { };
    stateDir = "/var/lib/ci-warm";
    ciDomain = null;
    deployer = {
      kind = "stack";
      abraPackage = null;
      abraExecutable = "abra";
      server = null;
      abraDir = "/root/.abra";
      timeoutSecs = 900;
      deployArgs = [ ];
      pty = false;
    };
    health = { timeoutSecs = 300; intervalMs = 2000; };
    undeploy = { timeoutSecs = 120; };
    gate = { manualMigrationPhrases = [ ]; };
    snapshot = { reserveBytes = 1073741824; reservePercent = 5; };
    alerts = { onAlert = null; };
    metricsFile = null;
    credentials = { };
    disk = {
      warnFreePercent = 15;
      criticalFreePercent = 5;
      dockerRoot = "/var/lib/docker";
      pruneSeenAlertsDays = 30;
      check = { enable = true; onCalendar = "*:0/15"; };
      prune = { enable = false; onCalendar = "daily"; };
    };
    apps = { };
    traefik = removeAttrs appDefaults [ "preset" ] // { enable = false; recipe = "traefik"; };
    keycloak = removeAttrs appDefaults [ "preset" ] // {
      enable = false;
      recipe = "keycloak";
      url = null;
      adminUser = "admin";
      adminPasswordFile = null;
      reapGraceSecs = 21600;
      liveRuns = { stackLabel = null; stackPattern = null; };
      reap = { enable = false; onCalendar = "hourly"; };
    };
    canonicals = { };
    sweep = {
      enable = false;
      onCalendar = "*-*-* 02:00:00";
      randomizedDelaySec = "30m";
      maxTests = 5;
      timeoutSecs = 14400;
      coldCommand = [ ];
      path = [ ];
      readWritePaths = [ ];
    };
  };
  # `recipe` defaults to the app's name (the module's submodule does the same).
  appDefaults = {
    preset = "custom";
    repo = null;
    domain = null;
    stack = null;
    envFile = null;
    stateful = null;
    pinnedVersion = null;
    initialVersion = null;
    approved = [ ];
    probes = null;
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
    probes = null;
    healthTimeoutSecs = null;
    onCalendar = "hourly";
    randomizedDelaySec = "10m";
  };
  probeDefaults = { url = null; status = 200; bodyContains = null; host = null; connectTo = null; caFile = null; insecure = false; };

  # Fills in defaults the way the module system would (for evaluation without nixpkgs).
  withDefaults = cfg:
    let
      merge = d: v:
        if isAttrs d && isAttrs v
        then d // mapAttrs (n: x: if d ? ${n} then merge d.${n} x else x) v
        else v;
      probes = x: x // { probes = if x.probes == null then null else map (merge probeDefaults) x.probes; };
      full = merge defaults cfg;
    in
    full // {
      apps = mapAttrs (n: a: probes (merge (appDefaults // { recipe = n; }) a)) (cfg.apps or { });
      canonicals = mapAttrs (_: c: probes (merge canonicalDefaults c)) (cfg.canonicals or { });
      traefik = probes full.traefik;
      keycloak = probes full.keycloak;
    };

  # The JSON config file's content, as an attribute set: the free-form `settings` with the
  # typed options merged over them.
  config = cfg:
    if isAttrs cfg.settings then recursiveUpdate cfg.settings (typedConfig (pathOptions cfg))
    else typedConfig (pathOptions cfg); # refused by an assertion

  # What the typed options render.
  typedConfig = cfg: clean {
    state_dir = cfg.stateDir;
    ci_domain = cfg.ciDomain;
    deployer =
      if cfg.deployer.kind == "abra"
      then {
        kind = "abra"; abra = cfg.deployer.abraExecutable; server = cfg.deployer.server;
        abra_dir = cfg.deployer.abraDir; timeout_secs = cfg.deployer.timeoutSecs;
        deploy_args = cfg.deployer.deployArgs; pty = cfg.deployer.pty;
      }
      else { kind = "stack"; };
    health = { timeout_secs = cfg.health.timeoutSecs; interval_ms = cfg.health.intervalMs; };
    undeploy = { timeout_secs = cfg.undeploy.timeoutSecs; };
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
    sweep = { max_tests = cfg.sweep.maxTests; timeout_secs = cfg.sweep.timeoutSecs; cold_command = cfg.sweep.coldCommand; };
    keycloak =
      if cfg.keycloak.adminPasswordFile != null then {
        url = keycloakUrl cfg;
        admin_user = cfg.keycloak.adminUser;
        # The password reaches the units through LoadCredential, never the store.
        admin_password = { credential = keycloakCredential; };
        reap_grace_secs = cfg.keycloak.reapGraceSecs;
        live_runs =
          if cfg.keycloak.liveRuns.stackLabel == null && cfg.keycloak.liveRuns.stackPattern == null then null
          else clean {
            stack_label = cfg.keycloak.liveRuns.stackLabel;
            stack_pattern = cfg.keycloak.liveRuns.stackPattern;
          };
      } else null;
  };

  # Settings the module refuses, as NixOS assertions ({ assertion, message }).
  assertions = cfg0:
    let
      cfg = pathOptions cfg0;
      apps = allApps cfg;
      check = assertion: message: { inherit assertion message; };
      each = attrs: f: concatLists (mapAttrsToList f attrs);

      stackClaims =
        mapAttrsToList
          (n: a: {
            owner = appOption cfg n;
            stack = if a.stack != null then a.stack else if a.domain != null then stackOfDomain a.domain else null;
          })
          apps
        ++ mapAttrsToList
          (r: c: {
            owner = "services.ci-warm.canonicals.${r}";
            stack = if c.stack != null then c.stack
              else if canonicalDomain cfg r c != null then stackOfDomain (canonicalDomain cfg r c)
              else null;
          })
          cfg.canonicals;
      claimed = filter (c: c.stack != null) stackClaims;
      ownersOf = s: map (c: c.owner) (filter (c: c.stack == s) claimed);
      sharedStacks = filter (s: length (ownersOf s) > 1) (dedupe (map (c: c.stack) claimed));

      probeOwners =
        mapAttrsToList (n: a: { owner = appOption cfg n; probes = if a.probes == null then [ ] else a.probes; }) apps
        ++ mapAttrsToList (r: c: { owner = "services.ci-warm.canonicals.${r}"; probes = if c.probes == null then [ ] else c.probes; }) cfg.canonicals;

      absolutePaths =
        # stateDir, metricsFile, deployer.abraDir, disk.dockerRoot and sweep.readWritePaths are
        # `types.path` (absolute by type). These stay strings, checked here: a path literal in
        # a string-typed option is never copied into the store (secrets, env files).
        [ { opt = "keycloak.adminPasswordFile"; value = cfg.keycloak.adminPasswordFile; } ]
        ++ mapAttrsToList (n: f: { opt = "credentials.${n}"; value = f; }) cfg.credentials
        ++ mapAttrsToList (n: a: { opt = "${appPath cfg n}.envFile"; value = a.envFile; }) apps
        ++ mapAttrsToList (r: c: { opt = "canonicals.${r}.envFile"; value = c.envFile; }) cfg.canonicals;

      # With the stack deployer the units run with ProtectHome=yes: nothing under /home or /root
      # exists for them.
      hiddenFromUnits = p: cfg.deployer.kind == "stack" && isAbsolute p
        && any (h: p == h || hasPrefix "${h}/" p) [ "/home" "/root" "/run/user" ];
      readByUnits =
        mapAttrsToList (n: a: { opt = "${appPath cfg n}.envFile"; value = a.envFile; }) apps
        ++ mapAttrsToList (n: a: { opt = "${appPath cfg n}.repo"; value = a.repo; }) apps
        ++ mapAttrsToList (r: c: { opt = "canonicals.${r}.envFile"; value = c.envFile; }) cfg.canonicals
        ++ mapAttrsToList (r: c: { opt = "canonicals.${r}.repo"; value = c.repo; }) cfg.canonicals;

      secretFiles =
        optional (cfg.keycloak.adminPasswordFile != null) { opt = "keycloak.adminPasswordFile"; value = cfg.keycloak.adminPasswordFile; }
        ++ mapAttrsToList (n: f: { opt = "credentials.${n}"; value = f; }) cfg.credentials;
    in
    each cfg.apps (n: _: [
      (check (validName n)
        "services.ci-warm.apps.${n}: the app name must match [a-z0-9][a-z0-9._-]*, without `..`, at most 64 characters (it names a directory and the unit ci-warm-${n}.service).")
      (check (!(elem n ownUnits))
        "services.ci-warm.apps.${n}: the name is taken by ci-warm's own unit ${unitName n}.service; rename the app.")
    ])
    ++ [
      (check (!(cfg.traefik.enable && cfg.apps ? traefik))
        "services.ci-warm: traefik.enable and apps.traefik both define the app `traefik`; use one of them.")
      (check (!(cfg.keycloak.enable && cfg.apps ? keycloak))
        "services.ci-warm: keycloak.enable and apps.keycloak both define the app `keycloak`; use one of them.")
    ]
    ++ each cfg.canonicals (r: c: [
      (check (validName r)
        "services.ci-warm.canonicals.${r}: the recipe name must match [a-z0-9][a-z0-9._-]*, without `..`, at most 64 characters.")
      (check (!(apps ? ${canonicalApp r}))
        "services.ci-warm.canonicals.${r}: its canonical deployment is the app `${canonicalApp r}`, which ${appOption cfg (canonicalApp r)} also defines; remove or rename one of them.")
      (check (canonicalDomain cfg r c != null)
        "services.ci-warm.canonicals.${r}: needs a domain; set canonicals.${r}.domain, or ciDomain to use ${canonicalApp r}.<ciDomain>.")
    ])
    ++ each apps (n: a: [
      (check (a.domain != null)
        "${appOption cfg n}.domain must be set (the app's domain, abra's app name).")
    ])
    ++ map
      (s: check false
        "services.ci-warm: ${concatStringsSep " and " (ownersOf s)} deploy to the same swarm stack `${s}`; set `stack` (or a different domain) on all but one.")
      sharedStacks
    ++ concatLists (map
      (o: concatLists (builtins.genList
        (i: [
          (check ((builtins.elemAt o.probes i).url != null)
            "${o.owner}.probes.${toString i}.url must be set (an http:// or https:// URL).")
        ])
        (length o.probes)))
      probeOwners)
    ++ [
      (check (cfg.deployer.kind != "abra" || (cfg.deployer.server != null && cfg.deployer.server != ""))
        "services.ci-warm.deployer.server must name the abra server when deployer.kind = \"abra\".")
      (check (cfg.deployer.kind != "abra" || cfg.deployer.abraPackage != null || isAbsolute cfg.deployer.abraExecutable)
        "services.ci-warm.deployer: the units' PATH has no abra; set deployer.abraPackage (e.g. pkgs.abra) or an absolute deployer.abraExecutable.")
      (check (cfg.disk.criticalFreePercent <= cfg.disk.warnFreePercent)
        "services.ci-warm.disk.criticalFreePercent (${toString cfg.disk.criticalFreePercent}) must not exceed disk.warnFreePercent (${toString cfg.disk.warnFreePercent}).")
      (check (!cfg.sweep.enable || cfg.sweep.coldCommand != [ ])
        "services.ci-warm.sweep.coldCommand must be set when sweep.enable is true (the cold-test argv template, e.g. [ \"/path/to/cold-test\" \"{recipe}\" \"{version}\" \"{run}\" ]).")
      (check (cfg.alerts.onAlert == null || cfg.alerts.onAlert != [ ])
        "services.ci-warm.alerts.onAlert must be null or a non-empty argv list.")
      (check (cfg.keycloak.adminPasswordFile == null || keycloakUrl cfg != null)
        "services.ci-warm.keycloak.url must be set when keycloak.adminPasswordFile is (or enable keycloak with a domain, to use https://<domain>).")
      (check (!cfg.keycloak.reap.enable || cfg.keycloak.adminPasswordFile != null)
        "services.ci-warm.keycloak.reap.enable needs keycloak.adminPasswordFile (the admin password of the master realm).")
      (check (!cfg.keycloak.reap.enable || ((cfg.keycloak.liveRuns.stackLabel == null) != (cfg.keycloak.liveRuns.stackPattern == null)))
        "services.ci-warm.keycloak.reap.enable needs exactly one of keycloak.liveRuns.stackLabel and keycloak.liveRuns.stackPattern (how the reaper tells the runs that are still live from the running stacks).")
    ]
    ++ map
      (p: check (p.value == null || isAbsolute p.value)
        "services.ci-warm.${p.opt} must be an absolute path, got \"${toString p.value}\".")
      absolutePaths
    ++ map
      (p: check (p.value == null || !(hiddenFromUnits p.value))
        "services.ci-warm.${p.opt} is \"${toString p.value}\", under /home, /root or /run/user, which the units cannot see with the stack deployer (ProtectHome=yes); move it, e.g. to /etc/ci-warm or /srv.")
      readByUnits
    ++ map
      (p: check (p.value == null || !(hasPrefix builtins.storeDir p.value))
        "services.ci-warm.${p.opt} points into the Nix store, where every user can read it; keep secrets outside it (e.g. a path from sops-nix or agenix).")
      secretFiles
    ++ map
      (at: check false
        "services.ci-warm.settings.${at} is also set by a typed option of services.ci-warm, which wins over `settings`; set the typed option instead (see docs/configuration.md, NixOS options).")
      (if isAttrs cfg.settings then overridden "" cfg.settings (typedConfig cfg) else [ ])
    ++ [
      (check (isAttrs cfg.settings)
        "services.ci-warm.settings must be an attribute set (the JSON object of docs/configuration.md).")
    ]
    ++ each cfg.credentials (n: _: [
      (check (validName n && n != keycloakCredential)
        "services.ci-warm.credentials.${n}: a credential name must match [a-z0-9][a-z0-9._-]* and must not be `${keycloakCredential}` (ci-warm's own).")
    ]);

  # Every app the timers reconcile, with its schedule.
  schedules = cfg:
    (mapAttrs (_: a: { inherit (a) onCalendar randomizedDelaySec; }) (allApps cfg))
    // listToAttrs (map (recipe: {
      name = canonicalApp recipe;
      value = { inherit (cfg.canonicals.${recipe}) onCalendar randomizedDelaySec; };
    }) (attrNames cfg.canonicals));

  # LoadCredential= entries: secrets are read by systemd from their files and appear to the
  # unit under $CREDENTIALS_DIRECTORY, never in the store, the environment or argv.
  credentials = cfg:
    optional (cfg.keycloak.adminPasswordFile != null) "${keycloakCredential}:${cfg.keycloak.adminPasswordFile}"
    ++ mapAttrsToList (n: f: "${n}:${f}") cfg.credentials;

  # The state dir: systemd creates it (StateDirectory=, mode 0750) before a unit starts when it
  # is under /var/lib, the default; any other place is made by systemd-tmpfiles (the module's
  # `systemd.tmpfiles.settings`).
  stateDirectory = cfg:
    let sd = (pathOptions cfg).stateDir; in
    if hasPrefix "/var/lib/" sd && stringLength sd > 9 then substring 9 (stringLength sd) sd else null;

  # What a unit may do, by the privileges its operations need (docs/configuration.md,
  # "Unit privileges", says the same unit by unit). Every unit runs as root, because Docker's
  # socket is root's; the bounding set is what keeps a unit from overriding file permissions,
  # changing owners or creating device nodes when its work does not need it.
  privileges = {
    # Snapshot and restore (reconcile): volume trees are copied back with every owner, mode,
    # device node, setuid bit, file capability and xattr they had.
    restore = {
      CapabilityBoundingSet = [
        "CAP_CHOWN"           # fchownat/lchown: restore each file's owner
        "CAP_FOWNER"          # chmod, utimensat, xattrs on files owned by other users
        "CAP_FSETID"          # keep setuid/setgid bits across the chown
        "CAP_DAC_OVERRIDE"    # write into volume directories owned by other users
        "CAP_DAC_READ_SEARCH" # read and walk unreadable files/directories while snapshotting
        "CAP_MKNOD"           # mknodat: device nodes inside volumes
        "CAP_SETFCAP"         # security.capability xattrs (file capabilities)
        "CAP_SYS_ADMIN"       # trusted.* xattrs (overlay/fuse-backed volumes keep them)
      ];
      # Every call the snapshot engine makes is in @system-service: mknodat, lsetxattr,
      # renameat2, utimensat (@file-system), fchownat/lchown (@chown), syncfs (@sync),
      # copy_file_range and ioctl(FICLONE) (listed in @system-service itself). What restore
      # needs beyond the other units is that @chown and capset are NOT taken away again
      # (both are members of @privileged, which the other units drop).
      SystemCallFilter = [ "@system-service" ];
      RestrictSUIDSGID = "no"; # restoring a volume must recreate setuid/setgid files exactly
    };
    # Deleting what a restore left behind (disk prune: snapshots of apps no longer configured,
    # stale temporary trees), whose files have any owner and mode.
    prune = {
      CapabilityBoundingSet = [
        "CAP_DAC_OVERRIDE"    # unlink inside directories of other owners, mode 0500 included
        "CAP_DAC_READ_SEARCH" # walk them
        "CAP_FOWNER"          # unlink in sticky directories (a volume's /tmp)
      ];
      SystemCallFilter = [ "@system-service" "~@privileged" ];
      RestrictSUIDSGID = "yes";
    };
    # Everything else: reading Docker's state through its socket, HTTP(S), writing ci-warm's
    # own root-owned files in the state dir (alerts, registry, logs, git checkouts).
    none = {
      CapabilityBoundingSet = [ "" ];
      SystemCallFilter = [ "@system-service" "~@privileged" ];
      RestrictSUIDSGID = "yes";
    };
  };

  # What no ci-warm unit may touch, the reconcilers and ci-warm-apply alike.
  kernelProtections = {
    NoNewPrivileges = "yes";
    ProtectKernelTunables = "yes";
    ProtectKernelModules = "yes";
    ProtectKernelLogs = "yes";
    ProtectControlGroups = "yes";
    ProtectClock = "yes";
    ProtectHostname = "yes";
  };

  # Systemd hardening shared by every ci-warm unit, then its privileges. Docker is reached
  # through its socket (a socket on a read-only mount still accepts connect(), but the path is
  # listed so a stricter future default cannot break it). No PrivateDevices/DevicePolicy:
  # restores recreate device nodes in volumes.
  hardening = cfg0: privilege:
    let cfg = pathOptions cfg0; in
    {
      ProtectSystem = "strict";
      ReadWritePaths =
        [ cfg.stateDir "-/run/docker.sock" "-${cfg.disk.dockerRoot}/volumes" ]
        ++ optional (cfg.deployer.kind == "abra") "-${cfg.deployer.abraDir}"
        ++ optional (cfg.metricsFile != null) "-${dirOf cfg.metricsFile}";
      ProtectHome = if cfg.deployer.kind == "abra" then "read-only" else "yes";
      PrivateTmp = "yes";
      ProtectProc = "invisible";
      RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" ];
      RestrictNamespaces = "yes";
      RestrictRealtime = "yes";
      LockPersonality = "yes";
      MemoryDenyWriteExecute = "yes";
      SystemCallArchitectures = "native";
      SystemCallErrorNumber = "EPERM";
      UMask = "0027";
    }
    // kernelProtections
    // (if stateDirectory cfg != null then { StateDirectory = stateDirectory cfg; StateDirectoryMode = "0750"; } else { })
    // privileges.${privilege};

  # ci-warm-apply only asks systemd (over its private socket, as root) to start the reconciles:
  # no capability, no network, no writable path.
  applyHardening = {
    ProtectSystem = "strict";
    ProtectHome = "yes";
    PrivateTmp = "yes";
    PrivateNetwork = "yes";
    RestrictAddressFamilies = [ "AF_UNIX" ];
    RestrictNamespaces = "yes";
    RestrictRealtime = "yes";
    RestrictSUIDSGID = "yes";
    LockPersonality = "yes";
    MemoryDenyWriteExecute = "yes";
    SystemCallArchitectures = "native";
    SystemCallFilter = [ "@system-service" "~@privileged" ];
    SystemCallErrorNumber = "EPERM";
    CapabilityBoundingSet = [ "" ];
  } // kernelProtections;

  # name -> { description, after, wants, requires, wantedBy, environment, serviceConfig } for
  # every service, and name -> { description, wantedBy, timerConfig } for every timer.
  # `escape` turns an argv list into an ExecStart= line: the module passes NixOS'
  # utils.escapeSystemdExecArgs, the checks this file's equivalent.
  units = { cfg, exe, configFile, systemctl, escape ? escapeSystemdExecArgs }:
    let
      cfg' = pathOptions cfg;
    in
    let
      cfg = cfg';
      environment =
        { CI_WARM_CONFIG = toString configFile; }
        // (if cfg.deployer.kind == "abra"
        # abra keeps its state under $HOME/.abra unless ABRA_DIR says otherwise: set both.
        then { ABRA_DIR = cfg.deployer.abraDir; HOME = dirOf cfg.deployer.abraDir; }
        else { HOME = cfg.stateDir; });
      base = privilege: { Type = "oneshot"; LoadCredential = credentials cfg; } // hardening cfg privilege;
      onDocker = {
        after = [ "docker.service" "network-online.target" ];
        wants = [ "network-online.target" ];
        requires = [ "docker.service" ];
      };
      service = description: deps: serviceConfig: deps // { inherit description environment serviceConfig; };
      timer = description: s: {
        inherit description;
        wantedBy = [ "timers.target" ];
        timerConfig = clean {
          OnCalendar = s.onCalendar;
          Persistent = "true";
          RandomizedDelaySec = s.randomizedDelaySec or null;
        };
      };
      sched = schedules cfg;
      apps = attrNames sched;
      jobs =
        optional cfg.sweep.enable {
          name = "sweep";
          what = "nightly cold sweep of enrolled recipes";
          args = [ "sweep" ];
          deps = onDocker;
          schedule = cfg.sweep;
          # Cold runs, git fetches and the canonical registry: no snapshot or restore (a
          # promotion only records the version; the canonical's own unit upgrades it).
          privilege = "none";
          # The cold-test command is the operator's: it may JIT, and may write where the
          # operator says.
          extra = {
            MemoryDenyWriteExecute = "no";
            ReadWritePaths = (hardening cfg "none").ReadWritePaths ++ cfg.sweep.readWritePaths;
          };
        }
        ++ optional cfg.disk.check.enable {
          name = "disk-check";
          what = "free-space watch of the state dir and Docker's root";
          args = [ "disk" "check" ];
          deps = { };
          schedule = cfg.disk.check;
          # statvfs, alert files and the metrics file.
          privilege = "none";
          extra = { };
        }
        ++ optional cfg.disk.prune.enable {
          name = "disk-prune";
          what = "prune stale temporary files, old acknowledged alerts and unconfigured apps' snapshots";
          args = [ "disk" "prune" ];
          deps = { };
          schedule = cfg.disk.prune;
          privilege = "prune";
          extra = { };
        }
        ++ optional cfg.keycloak.reap.enable {
          name = "realm-reap";
          what = "delete stale per-run keycloak realms";
          # Live runs come from the running stacks: a run longer than the grace period keeps its
          # realm; if the swarm cannot be read, nothing is reaped.
          args = [ "realm" "reap" "--live-from-swarm" ];
          deps = onDocker;
          schedule = cfg.keycloak.reap;
          # HTTPS to keycloak and a read of the swarm's services.
          privilege = "none";
          extra = { };
        };
    in
    {
      services =
        listToAttrs (map
          (app: {
            name = unitName app;
            value = service "ci-warm: reconcile warm app ${app}" onDocker (base "restore" // {
              ExecStart = escape [ exe "reconcile" "--wait" app ];
              # 0 ok/no-op/held and 4 rolled back and recovered are both a finished job; 5 (not
              # recovered) and the rest fail the unit so monitoring sees it.
              SuccessExitStatus = [ "4" ];
            });
          })
          apps)
        // optionalAttrs (apps != [ ]) {
          # Restarted by nixos-rebuild when the config changes (restartTriggers in the module);
          # it starts every reconcile, so a config change takes effect at once. --no-block: a
          # reconcile already running is not interrupted, the start request joins it.
          "ci-warm-apply" = {
            description = "ci-warm: reconcile every app after a configuration change";
            after = [ "docker.service" ];
            wantedBy = [ "multi-user.target" ];
            serviceConfig = applyHardening // {
              Type = "oneshot";
              RemainAfterExit = "yes";
              ExecStart = escape ([ systemctl "start" "--no-block" ] ++ map (a: "${unitName a}.service") apps);
            };
          };
        }
        // listToAttrs (map
          (j: {
            name = unitName j.name;
            value = service "ci-warm: ${j.what}" j.deps (base j.privilege // { ExecStart = escape ([ exe ] ++ j.args); } // j.extra);
          })
          jobs);
      timers =
        listToAttrs (map (app: { name = unitName app; value = timer "ci-warm: periodic reconcile of ${app}" sched.${app}; }) apps)
        // listToAttrs (map (j: { name = unitName j.name; value = timer "ci-warm: ${j.what}" j.schedule; }) jobs);
    };

  # Renders one unit as systemd INI text the way NixOS does (a list is one assignment per
  # item); used by the checks, NixOS renders its own.
  unitText = kind: u:
    let
      value = v: if isBool v then (if v then "true" else "false") else toString v;
      lines = section: attrs: [ "[${section}]" ]
        ++ concatLists (map
          (k: map (v: "${k}=${value v}") (if isList attrs.${k} then attrs.${k} else [ attrs.${k} ]))
          (filter (k: attrs.${k} != null) (attrNames attrs)));
      unitSec = clean {
        Description = u.description;
        After = u.after or null;
        Wants = u.wants or null;
        Requires = u.requires or null;
      };
      env = u.environment or { };
      serviceSec = u.serviceConfig // optionalAttrs (env != { }) {
        Environment = mapAttrsToList (k: v: "\"${k}=${v}\"") env;
      };
      installSec = if u ? wantedBy then [ "" ] ++ lines "Install" { WantedBy = u.wantedBy; } else [ ];
      body = if kind == "service" then lines "Service" serviceSec else lines "Timer" u.timerConfig;
    in
    concatStringsSep "\n" (lines "Unit" unitSec ++ [ "" ] ++ body ++ installSec) + "\n";
}
