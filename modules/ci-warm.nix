{ config, lib, pkgs, utils, ... }:

let
  cfg = config.services.ci-warm;
  # Config, assertions and units are computed by a builtins-only file, so the test command can
  # evaluate exactly what this module deploys without nixpkgs.
  render = import ./render.nix;
  d = render.defaults;
  inherit (lib) mkEnableOption mkOption mkIf types literalExpression;

  settingsFormat = pkgs.formats.json { };
  renderedConfig = settingsFormat.generate "ci-warm.json" (render.config cfg);
  # A rejected config fails `nixos-rebuild build`, not the first reconcile after the switch.
  configFile =
    if cfg.checkConfig then
      pkgs.runCommand "ci-warm-checked.json" { nativeBuildInputs = [ cfg.package ]; } ''
        ci-warm config check --static ${renderedConfig} >/dev/null
        cp ${renderedConfig} $out
      ''
    else renderedConfig;

  units = render.units {
    inherit cfg configFile;
    exe = lib.getExe cfg.package;
    systemctl = "${config.systemd.package}/bin/systemctl";
    escape = utils.escapeSystemdExecArgs;
  };
  stateDirectory = render.stateDirectory cfg;

  calendarOption = default: what: mkOption {
    type = types.str;
    inherit default;
    example = "*:0/30";
    description = "When ${what} runs (a systemd.time(7) calendar event).";
  };

  probeModule = types.submodule {
    options = {
      url = mkOption {
        type = types.nullOr types.str;
        default = render.probeDefaults.url;
        example = "https://sso.ci.example.org/realms/master";
        description = "URL the health gate requests (`http://` or `https://`). Required: an assertion names each probe without one.";
      };
      status = mkOption {
        type = types.oneOf [
          (types.ints.between 100 599)
          (types.listOf (types.ints.between 100 599))
          (types.strMatching "[1-5][0-9][0-9]-[1-5][0-9][0-9]")
        ];
        default = render.probeDefaults.status;
        example = "200-499";
        description = "HTTP status the probe must answer: one (`200`), a list (`[ 200 302 ]`) or a range (`\"200-499\"`).";
      };
      bodyContains = mkOption {
        type = types.nullOr types.str;
        default = render.probeDefaults.bodyContains;
        example = "OK";
        description = "A substring the response body must contain; null checks only the status.";
      };
      host = mkOption {
        type = types.nullOr types.str;
        default = render.probeDefaults.host;
        example = "traefik.ci.example.org";
        description = "Host header to send with a plain-`http` URL; refused for `https` (the TLS handshake uses the URL's name): use `connectTo` instead.";
      };
      connectTo = mkOption {
        type = types.nullOr types.str;
        default = render.probeDefaults.connectTo;
        example = "127.0.0.1";
        description = "Connect to this address of the host (`127.0.0.1` or `127.0.0.1:8443`) while the TLS server name, the certificate check and the Host header keep the URL's domain (curl's `--resolve`): how to probe an app behind traefik on this host.";
      };
      caFile = mkOption {
        type = types.nullOr types.str;
        default = render.probeDefaults.caFile;
        example = "/etc/ci-warm/staging-ca.pem";
        description = "A PEM bundle trusted for this probe in addition to the built-in public roots (e.g. a staging traefik's own CA). Must exist when the config is checked.";
      };
      insecure = mkOption {
        type = types.bool;
        default = render.probeDefaults.insecure;
        description = "Skip the certificate check. Logged on every probe and shown by `ci-warm status`.";
      };
    };
  };

  scheduleOptions = defaults: {
    onCalendar = calendarOption defaults.onCalendar "the reconcile";
    randomizedDelaySec = mkOption {
      type = types.str;
      default = defaults.randomizedDelaySec;
      example = "0";
      description = "Random delay added to each run (systemd.time(7) time span), so apps do not all upgrade at once.";
    };
  };

  # The options every warm app has; the traefik and keycloak conveniences reuse them (their
  # preset is fixed, so they do not offer `preset`).
  appOptions = { recipeDefault, recipeDefaultText ? null, withPreset ? true }:
    lib.optionalAttrs withPreset {
      preset = mkOption {
        type = types.enum [ "traefik" "keycloak" "custom" ];
        default = render.appDefaults.preset;
        description = "Sets defaults: traefik is stateless and probed at `http://<domain>/` through this host (any answer below 500), keycloak stateful and probed at `https://<domain>/realms/master` through this host, custom stateful without probes.";
      };
    }
    // {
      recipe = mkOption {
        type = types.str;
        default = recipeDefault;
        description = "The Co-op Cloud recipe name.";
      } // lib.optionalAttrs (recipeDefaultText != null) { defaultText = literalExpression recipeDefaultText; };
      repo = mkOption {
        type = types.nullOr types.str;
        default = render.appDefaults.repo;
        example = "https://git.coopcloud.tech/coop-cloud/keycloak.git";
        description = "Git URL or path of the recipe (a path not under /home or /root, which the hardened units cannot see); null uses the Co-op Cloud catalogue.";
      };
      domain = mkOption {
        type = types.nullOr types.str;
        default = render.appDefaults.domain;
        example = "sso.ci.example.org";
        description = "The app's domain (abra's app name). Required: an assertion names each app without one.";
      };
      stack = mkOption {
        type = types.nullOr types.str;
        default = render.appDefaults.stack;
        description = "Swarm stack name; null derives it from the domain (dots become underscores), as abra does.";
      };
      envFile = mkOption {
        type = types.nullOr types.str;
        default = render.appDefaults.envFile;
        example = "/etc/ci-warm/demo.env";
        description = "Absolute path of the app's env file, for the stack deployer. A string, so the file is not copied into the store; not under /home or /root, which the hardened units cannot see.";
      };
      stateful = mkOption {
        type = types.nullOr types.bool;
        default = render.appDefaults.stateful;
        description = "Whether volumes are snapshotted around upgrades; null takes the preset's default.";
      };
      pinnedVersion = mkOption {
        type = types.nullOr types.str;
        default = render.appDefaults.pinnedVersion;
        example = "10.7.1+26.6.2";
        description = "Keep the app on exactly this version instead of the newest safe one; null tracks the newest.";
      };
      initialVersion = mkOption {
        type = types.nullOr types.str;
        default = render.appDefaults.initialVersion;
        description = "Version the first reconcile deploys; null means the newest safe one.";
      };
      approved = mkOption {
        type = types.listOf types.str;
        default = render.appDefaults.approved;
        example = [ "2.0.0+2.0.0" ];
        description = "Versions released from the safety gate, as `ci-warm approve` does.";
      };
      probes = mkOption {
        type = types.nullOr (types.listOf probeModule);
        default = render.appDefaults.probes;
        example = literalExpression ''[ { url = "https://demo.ci.example.org/health"; connectTo = "127.0.0.1"; } ]'';
        description = "HTTP probes of the health gate; null takes the preset's (traefik: `http://<domain>/` through this host, any status below 500; keycloak: `https://<domain>/realms/master` through this host), `[ ]` none.";
      };
      healthTimeoutSecs = mkOption {
        type = types.nullOr types.ints.positive;
        default = render.appDefaults.healthTimeoutSecs;
        description = "How long this app may take to become healthy; null takes `health.timeoutSecs`.";
      };
    }
    // scheduleOptions render.appDefaults;

  jobOptions = what: note: defaults: {
    enable = mkOption {
      type = types.bool;
      default = defaults.enable;
      description = "Whether to run ${what} on a timer.${note}";
    };
    onCalendar = calendarOption defaults.onCalendar what;
  };
in
{
  options.services.ci-warm = {
    enable = mkEnableOption "ci-warm, which keeps a CI host's warm Co-op Cloud deployments current";

    # The flake's nixosModules.default sets this to the flake's own build with mkDefault.
    package = lib.mkPackageOption pkgs "ci-warm" { };

    settings = mkOption {
      type = settingsFormat.type;
      default = d.settings;
      example = literalExpression ''
        {
          apps.demo.allow_prerelease = true;
        }
      '';
      description = ''
        Free-form ci-warm configuration: anything in docs/configuration.md, with its JSON keys
        (snake_case), e.g. a key this module has no typed option for yet. The typed options
        are merged over it and win; a setting a typed option also renders with another value
        is refused by an assertion. The merged file is checked by `ci-warm config check
        --static` at build time (`checkConfig`), so an unknown key fails the build.
      '';
    };

    checkConfig = mkOption {
      type = types.bool;
      default = d.checkConfig;
      description = "Run `ci-warm config check --static` (the file only: the build sandbox cannot see the host's env files) on the rendered config at build time, so a rejected config fails the build instead of the first reconcile. Turn off only when cross-compiling.";
    };

    stateDir = mkOption {
      type = types.path;
      default = d.stateDir;
      description = "State, snapshots, alerts and the canonical registry. Under /var/lib (the default) it is the units' `StateDirectory=` (made by systemd, mode 0750, before a unit starts); anywhere else systemd-tmpfiles makes it.";
    };

    ciDomain = mkOption {
      type = types.nullOr types.str;
      default = d.ciDomain;
      example = "ci.example.org";
      description = "The CI's base domain; canonicals live at `warm-<recipe>.<ciDomain>`. Null: every canonical needs its own domain.";
    };

    deployer = {
      kind = mkOption {
        type = types.enum [ "abra" "stack" ];
        default = d.deployer.kind;
        description = "`abra` (the CI host's normal tool) or `stack` (`docker stack deploy` from the recipe and the app's env file).";
      };
      abraPackage = mkOption {
        type = types.nullOr types.package;
        default = d.deployer.abraPackage;
        defaultText = literalExpression "null";
        example = literalExpression "pkgs.abra";
        description = "abra, put on the units' PATH. Null: `abraExecutable` must be an absolute path.";
      };
      abraExecutable = mkOption {
        type = types.str;
        default = d.deployer.abraExecutable;
        example = "/run/current-system/sw/bin/abra";
        description = "The abra executable: a name looked up on the units' PATH (see `abraPackage`) or an absolute path.";
      };
      server = mkOption {
        type = types.nullOr types.str;
        default = d.deployer.server;
        example = "ci.example.org";
        description = "The abra server the apps are registered on. Required when `kind` is `abra`.";
      };
      abraDir = mkOption {
        type = types.path;
        default = d.deployer.abraDir;
        description = "abra's state directory (`ABRA_DIR`, servers and app env files); writable for the units when the deployer is abra, which must have been set up there (`abra server add`). ci-warm gives each app its own `ABRA_DIR` under the state directory whose `servers/` and `catalogue/` link here.";
      };
      timeoutSecs = mkOption {
        type = types.ints.positive;
        default = d.deployer.timeoutSecs;
        description = "Deadline of one abra invocation, in seconds.";
      };
      deployArgs = mkOption {
        type = types.listOf types.str;
        default = d.deployer.deployArgs;
        example = [ "--no-domain-checks" ];
        description = "Extra arguments appended to every `abra app deploy`.";
      };
      pty = mkOption {
        type = types.bool;
        default = d.deployer.pty;
        description = "Run abra under a pseudo-terminal (`script -qec`, util-linux on the units' PATH). Off: deploy, undeploy, new and secret ran on plain pipes in production.";
      };
    };

    health = {
      timeoutSecs = mkOption {
        type = types.ints.positive;
        default = d.health.timeoutSecs;
        description = "How long a deployment may take to prove itself healthy, in seconds.";
      };
      intervalMs = mkOption {
        type = types.ints.positive;
        default = d.health.intervalMs;
        description = "Pause between two polls of the health gate, in milliseconds.";
      };
    };

    undeploy.timeoutSecs = mkOption {
      type = types.ints.between 1 86400;
      default = d.undeploy.timeoutSecs;
      description = "How long an undeploy may take until nothing of the stack is left and no container holds one of its volumes, in seconds; past it an upgrade is not attempted and the old version is redeployed (alert `undeploy-failed`).";
    };

    gate.manualMigrationPhrases = mkOption {
      type = types.listOf types.str;
      default = d.gate.manualMigrationPhrases;
      example = [ "manual migration" "breaking change" ];
      description = "Release-note phrases (case-insensitive) that hold a version for a person; empty takes the built-in list.";
    };

    snapshot = {
      reserveBytes = mkOption {
        type = types.ints.unsigned;
        default = d.snapshot.reserveBytes;
        description = "Free bytes that must remain after a snapshot; a snapshot that would cross it is refused before it starts.";
      };
      reservePercent = mkOption {
        type = types.ints.between 0 99;
        default = d.snapshot.reservePercent;
        description = "Free share (percent) that must remain after a snapshot.";
      };
    };

    alerts.onAlert = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = d.alerts.onAlert;
      example = [ "/run/current-system/sw/bin/logger" "-t" "ci-warm" ];
      description = "Command (argv, no shell) run with each new alert file's path appended; its failure is logged, never fatal. It runs inside the hardened units and can read `credentials` from `$CREDENTIALS_DIRECTORY`. Null: no hook.";
    };

    metricsFile = mkOption {
      type = types.nullOr types.path;
      default = d.metricsFile;
      example = "/var/lib/prometheus-node-exporter/ci-warm.prom";
      description = "Prometheus textfile-collector file rewritten after every reconcile; its directory is made writable for the units. Null: no metrics.";
    };

    credentials = mkOption {
      type = types.attrsOf types.str;
      default = d.credentials;
      example = { chat-token = "/run/secrets/ci-warm-chat-token"; };
      description = "Extra secrets, name to file outside the store, handed to every ci-warm unit through `LoadCredential` (readable as `$CREDENTIALS_DIRECTORY/<name>`), e.g. a token for the `alerts.onAlert` hook or the sweep's cold-test command.";
    };

    disk = {
      warnFreePercent = mkOption {
        type = types.ints.between 0 100;
        default = d.disk.warnFreePercent;
        description = "`disk check` warns below this free share.";
      };
      criticalFreePercent = mkOption {
        type = types.ints.between 0 100;
        default = d.disk.criticalFreePercent;
        description = "`disk check` raises a critical alert below this free share; at most `warnFreePercent`.";
      };
      dockerRoot = mkOption {
        type = types.path;
        default = d.disk.dockerRoot;
        description = "Docker's data root: watched by `disk check`, and its volumes are restored in place.";
      };
      pruneSeenAlertsDays = mkOption {
        type = types.ints.positive;
        default = d.disk.pruneSeenAlertsDays;
        description = "`disk prune` removes acknowledged alerts older than this many days.";
      };
      check = jobOptions "`ci-warm disk check` (one `disk-low` alert per threshold crossing)" "" d.disk.check;
      prune = jobOptions "`ci-warm disk prune` (stale temporary files, old acknowledged alerts, snapshots of apps no longer configured; never the only snapshot of a configured app)"
        " Off by default: with it, removing an app from the config lets its snapshot go." d.disk.prune;
    };

    apps = mkOption {
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options = appOptions { recipeDefault = name; recipeDefaultText = "<name>"; };
      }));
      default = d.apps;
      example = literalExpression ''
        {
          demo = {
            domain = "demo.ci.example.org";
            repo = "/srv/recipes/demo";
            probes = [ { url = "http://127.0.0.1:18080/health"; } ];
          };
        }
      '';
      description = "Warm apps, by app name: one reconcile service and timer each (`ci-warm-<name>`).";
    };

    traefik = {
      enable = mkEnableOption "the warm traefik (the app `traefik`: stateless, version rollback only)";
    } // appOptions { recipeDefault = d.traefik.recipe; withPreset = false; };

    keycloak = {
      enable = mkEnableOption "the warm keycloak (the app `keycloak`: stateful; per-run realms for tests)";
      url = mkOption {
        type = types.nullOr types.str;
        default = d.keycloak.url;
        example = "https://sso.ci.example.org";
        description = "Base URL of the keycloak that per-run realms are made on; null uses `https://<domain>` of the warm keycloak.";
      };
      adminUser = mkOption {
        type = types.str;
        default = d.keycloak.adminUser;
        description = "Admin user of the master realm.";
      };
      adminPasswordFile = mkOption {
        type = types.nullOr types.str;
        default = d.keycloak.adminPasswordFile;
        example = "/run/secrets/keycloak-admin-password";
        description = ''
          File with the master realm's admin password, handed to the units through
          `LoadCredential` (credential `keycloak-admin-password`); it never enters the store.
          Setting it enables realm management (`ci-warm realm`). A CI job that calls
          `ci-warm realm` itself needs the same credential: give its service
          `LoadCredential = "keycloak-admin-password:<this file>"`. Null: no realm management.
        '';
      };
      reapGraceSecs = mkOption {
        type = types.ints.positive;
        default = d.keycloak.reapGraceSecs;
        description = "Per-run realms younger than this many seconds are never reaped.";
      };
      liveRuns = {
        stackLabel = mkOption {
          type = types.nullOr types.str;
          default = d.keycloak.liveRuns.stackLabel;
          example = "ci.run";
          description = ''
            A label on the services of a CI run's stack whose value is the run id: the reaper
            keeps the realms of the runs whose stacks are running (`realm reap --live-from-swarm`).
            Set this or `stackPattern` when `reap.enable` is true.
          '';
        };
        stackPattern = mkOption {
          type = types.nullOr types.str;
          default = d.keycloak.liveRuns.stackPattern;
          example = "ci-{run}_*";
          description = ''
            A stack-name pattern with one `{run}` placeholder (a literal prefix, then the run id
            up to the literal text before a trailing `*`, or up to a literal suffix): the run ids
            of the running stacks are live. Set this or `stackLabel` when `reap.enable` is true.
          '';
        };
      };
      reap = jobOptions "`ci-warm realm reap --live-from-swarm` (per-run realms older than `reapGraceSecs` whose run has no running stack)" " Needs `adminPasswordFile` and one of `liveRuns.stackLabel`/`liveRuns.stackPattern`." d.keycloak.reap;
    } // appOptions { recipeDefault = d.keycloak.recipe; withPreset = false; };

    canonicals = mkOption {
      type = types.attrsOf (types.submodule {
        options = {
          version = mkOption {
            type = types.nullOr types.str;
            default = render.canonicalDefaults.version;
            example = "10.7.1+31.0.2";
            description = "Version to keep the canonical on until the canonical registry has one for this recipe; null: the newest safe one.";
          };
          repo = mkOption {
            type = types.nullOr types.str;
            default = render.canonicalDefaults.repo;
            description = "Git URL or path of the recipe; null uses the Co-op Cloud catalogue.";
          };
          domain = mkOption {
            type = types.nullOr types.str;
            default = render.canonicalDefaults.domain;
            description = "The canonical's domain; null uses `warm-<recipe>.<ciDomain>`.";
          };
          stack = mkOption {
            type = types.nullOr types.str;
            default = render.canonicalDefaults.stack;
            description = "Swarm stack; null derives it from the domain.";
          };
          envFile = mkOption {
            type = types.nullOr types.str;
            default = render.canonicalDefaults.envFile;
            description = "Absolute path of the env file, for the stack deployer.";
          };
          approved = mkOption {
            type = types.listOf types.str;
            default = render.canonicalDefaults.approved;
            description = "Versions released from the safety gate.";
          };
          probes = mkOption {
            type = types.nullOr (types.listOf probeModule);
            default = render.canonicalDefaults.probes;
            description = "HTTP probes of the health gate; null probes `https://<domain>/` through traefik on this host (any status below 500), `[ ]` none.";
          };
          healthTimeoutSecs = mkOption {
            type = types.nullOr types.ints.positive;
            default = render.canonicalDefaults.healthTimeoutSecs;
            description = "How long the canonical may take to become healthy; null takes `health.timeoutSecs`.";
          };
        } // scheduleOptions render.canonicalDefaults;
      });
      default = d.canonicals;
      example = literalExpression ''{ nextcloud = { version = "10.7.1+31.0.2"; }; }'';
      description = "Enrolled recipes, by recipe: a canonical deployment, the app `warm-<recipe>` (unit `ci-warm-warm-<recipe>`), keeping realistic data.";
    };

    sweep = {
      enable = mkEnableOption "the nightly cold sweep of enrolled recipes (`ci-warm sweep`)";
      onCalendar = calendarOption d.sweep.onCalendar "the sweep";
      randomizedDelaySec = mkOption {
        type = types.str;
        default = d.sweep.randomizedDelaySec;
        description = "Random delay added to the sweep's start.";
      };
      maxTests = mkOption {
        type = types.ints.positive;
        default = d.sweep.maxTests;
        description = "At most this many cold runs per sweep, least recently tested recipes first.";
      };
      timeoutSecs = mkOption {
        type = types.ints.unsigned;
        default = d.sweep.timeoutSecs;
        description = "A cold run still going after this many seconds is stopped (TERM, then KILL) and recorded as failed, and the sweep goes on; 0 means no limit.";
      };
      coldCommand = mkOption {
        type = types.listOf types.str;
        default = d.sweep.coldCommand;
        example = [ "/run/current-system/sw/bin/ci-cold-test" "--recipe" "{recipe}" "--version" "{version}" "--run" "{run}" ];
        description = "Cold-test argv template; `{recipe}`, `{version}`, `{run}` are substituted inside each item, never through a shell. Required when the sweep is enabled.";
      };
      path = mkOption {
        type = types.listOf types.package;
        default = d.sweep.path;
        example = literalExpression "[ pkgs.curl pkgs.jq ]";
        description = "Packages on the sweep unit's PATH, for the cold-test command.";
      };
      readWritePaths = mkOption {
        type = types.listOf types.path;
        default = d.sweep.readWritePaths;
        example = [ "/var/lib/ci-runs" ];
        description = "Absolute paths the cold-test command may write besides the state dir (the sweep unit is otherwise read-only, like every ci-warm unit).";
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = render.assertions cfg;

    virtualisation.docker.enable = lib.mkDefault true;
    environment.systemPackages = [ cfg.package ];
    # The file the CLI reads by default, so an operator's `ci-warm status` sees the units' config.
    environment.etc."ci-warm/config.json".source = configFile;

    # Under /var/lib the units' StateDirectory= makes the state dir; anywhere else, tmpfiles.
    systemd.tmpfiles.settings = lib.mkIf (stateDirectory == null) {
      "10-ci-warm".${toString cfg.stateDir}.d = { user = "root"; group = "root"; mode = "0750"; };
    };

    systemd.services = lib.mapAttrs
      (name: u: {
        inherit (u) description;
        after = u.after or [ ];
        wants = u.wants or [ ];
        requires = u.requires or [ ];
        wantedBy = u.wantedBy or [ ];
        environment = u.environment or { };
        path = [ config.virtualisation.docker.package pkgs.git ]
          ++ lib.optional (cfg.deployer.abraPackage != null) cfg.deployer.abraPackage
          ++ lib.optional (cfg.deployer.kind == "abra" && cfg.deployer.pty) pkgs.util-linux
          ++ lib.optionals (name == render.unitName "sweep") cfg.sweep.path;
        inherit (u) serviceConfig;
        # A changed config restarts ci-warm-apply on `nixos-rebuild switch`, which starts every
        # reconcile; the jobs themselves are never stopped mid-upgrade by a switch.
        restartTriggers = lib.optional (name == render.unitName "apply") configFile;
        restartIfChanged = name == render.unitName "apply";
      })
      units.services;

    systemd.timers = lib.mapAttrs (_: t: { inherit (t) description wantedBy timerConfig; }) units.timers;
  };

  meta.maintainers = [ ];
}
