{ config, lib, pkgs, ... }:

let
  cfg = config.services.ci-warm;
  render = import ./render.nix;
  d = render.defaults;
  inherit (lib) mkEnableOption mkOption mkPackageOption mkIf types literalExpression;

  settingsFormat = pkgs.formats.json { };
  configFile = settingsFormat.generate "ci-warm.json" (render.config cfg);
  units = render.units {
    inherit cfg configFile;
    exe = lib.getExe cfg.package;
    systemctl = "${config.systemd.package}/bin/systemctl";
  };

  probeModule = types.submodule {
    options = {
      url = mkOption {
        type = types.str;
        example = "https://sso.ci.example.org/realms/master";
        description = "URL the health gate requests (`http://` or `https://`).";
      };
      status = mkOption {
        type = types.ints.between 100 599;
        default = render.probeDefaults.status;
        description = "HTTP status the probe must answer.";
      };
      bodyContains = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "A substring the response body must contain.";
      };
      host = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "Host header to send, e.g. to reach an app through traefik by its domain.";
      };
    };
  };

  scheduleOptions = defaults: {
    onCalendar = mkOption {
      type = types.str;
      default = defaults.onCalendar;
      example = "*:0/30";
      description = "When the reconcile runs (systemd.time(7) calendar event).";
    };
    randomizedDelaySec = mkOption {
      type = types.str;
      default = defaults.randomizedDelaySec;
      description = "Random delay added to each run, so apps do not all upgrade at once.";
    };
  };

  # The options every warm app has; the traefik and keycloak conveniences reuse them.
  appOptions = { recipeDefault ? null, presetDefault ? "custom" }: {
    preset = mkOption {
      type = types.enum [ "traefik" "keycloak" "custom" ];
      default = presetDefault;
      description = "Sets defaults: traefik is stateless and probed at /ping, keycloak stateful and probed at /realms/master.";
    };
    recipe = mkOption {
      type = types.str;
      description = "The Co-op Cloud recipe name.";
    } // lib.optionalAttrs (recipeDefault != null) { default = recipeDefault; };
    repo = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Git URL or path of the recipe; defaults to the Co-op Cloud catalogue.";
    };
    domain = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "sso.ci.example.org";
      description = "The app's domain (abra's app name).";
    };
    stack = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Swarm stack name; defaults to the domain with dots replaced by underscores, as abra does.";
    };
    envFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "The app's env file, for the stack deployer. A path string, so it is not copied into the store.";
    };
    stateful = mkOption {
      type = types.nullOr types.bool;
      default = null;
      description = "Whether volumes are snapshotted around upgrades; null takes the preset's default.";
    };
    pinnedVersion = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "10.7.1+26.6.2";
      description = "Keep the app on exactly this version instead of the newest safe one.";
    };
    initialVersion = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "Version the first reconcile deploys; null means the newest.";
    };
    approved = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "2.0.0+2.0.0" ];
      description = "Versions released from the safety gate, as `ci-warm approve` does.";
    };
    probes = mkOption {
      type = types.listOf probeModule;
      default = [ ];
      description = "HTTP probes of the health gate; empty takes the preset's.";
    };
    healthTimeoutSecs = mkOption {
      type = types.nullOr types.ints.positive;
      default = null;
      description = "How long this app may take to become healthy; null takes `health.timeoutSecs`.";
    };
  } // scheduleOptions render.appDefaults;
in
{
  options.services.ci-warm = {
    enable = mkEnableOption "ci-warm, which keeps a CI host's warm Co-op Cloud deployments current";

    package = mkOption {
      type = types.package;
      default = pkgs.ci-warm or (pkgs.callPackage ../nix/package.nix { });
      defaultText = literalExpression "pkgs.ci-warm";
      description = "The ci-warm package.";
    };

    stateDir = mkOption {
      type = types.str;
      default = d.stateDir;
      description = "State, snapshots, alerts and the canonical registry.";
    };

    ciDomain = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "ci.example.org";
      description = "The CI's base domain; canonicals live at `warm-<recipe>.<ciDomain>`.";
    };

    deployer = {
      kind = mkOption {
        type = types.enum [ "abra" "stack" ];
        default = d.deployer.kind;
        description = "`abra` (the CI host's normal tool) or `stack` (`docker stack deploy`).";
      };
      abraExecutable = mkOption {
        type = types.str;
        default = d.deployer.abraExecutable;
        example = literalExpression ''"''${pkgs.abra}/bin/abra"'';
        description = "The abra executable.";
      };
      server = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = "The abra server the apps are registered on.";
      };
      abraDir = mkOption {
        type = types.str;
        default = d.deployer.abraDir;
        description = "abra's state directory; writable for the units when the deployer is abra.";
      };
    };

    health = {
      timeoutSecs = mkOption {
        type = types.ints.positive;
        default = d.health.timeoutSecs;
        description = "How long a deployment may take to prove itself healthy.";
      };
      intervalMs = mkOption {
        type = types.ints.positive;
        default = d.health.intervalMs;
        description = "Pause between two polls of the health gate.";
      };
    };

    gate.manualMigrationPhrases = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Release-note phrases that hold a version for a person; empty takes the built-in list.";
    };

    snapshot = {
      reserveBytes = mkOption {
        type = types.ints.unsigned;
        default = d.snapshot.reserveBytes;
        description = "Free bytes that must remain after a snapshot.";
      };
      reservePercent = mkOption {
        type = types.ints.between 0 99;
        default = d.snapshot.reservePercent;
        description = "Free share (percent) that must remain after a snapshot.";
      };
    };

    alerts.onAlert = mkOption {
      type = types.nullOr (types.listOf types.str);
      default = null;
      example = [ "/run/current-system/sw/bin/logger" "-t" "ci-warm" ];
      description = "Command (argv, no shell) run with each new alert file's path appended.";
    };

    metricsFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/prometheus-node-exporter/ci-warm.prom";
      description = "Prometheus textfile-collector file written after every reconcile.";
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
        description = "`disk check` raises a critical alert below this free share.";
      };
      dockerRoot = mkOption {
        type = types.str;
        default = d.disk.dockerRoot;
        description = "Docker's data root (its volumes are restored in place).";
      };
      pruneSeenAlertsDays = mkOption {
        type = types.ints.positive;
        default = d.disk.pruneSeenAlertsDays;
        description = "Acknowledged alerts older than this are pruned.";
      };
    };

    apps = mkOption {
      type = types.attrsOf (types.submodule { options = appOptions { }; });
      default = { };
      description = "Warm apps, by app name: one reconcile service and timer each.";
    };

    traefik = {
      enable = mkEnableOption "the warm traefik (stateless, version rollback only)";
    } // appOptions { recipeDefault = "traefik"; presetDefault = "traefik"; };

    keycloak = {
      enable = mkEnableOption "the warm keycloak (stateful; per-run realms for tests)";
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://sso.ci.example.org";
        description = "Base URL of the warm keycloak, for per-run realms.";
      };
      adminUser = mkOption {
        type = types.str;
        default = d.keycloak.adminUser;
        description = "Admin user of the master realm.";
      };
      adminPasswordFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/run/secrets/keycloak-admin-password";
        description = "File with the admin password, handed to the units through LoadCredential; it never enters the store.";
      };
    } // appOptions { recipeDefault = "keycloak"; presetDefault = "keycloak"; };

    canonicals = mkOption {
      type = types.attrsOf (types.submodule {
        options = {
          version = mkOption {
            type = types.nullOr types.str;
            default = null;
            description = "Version until the canonical registry has one for this recipe.";
          };
          repo = mkOption { type = types.nullOr types.str; default = null; description = "Git URL or path of the recipe."; };
          domain = mkOption { type = types.nullOr types.str; default = null; description = "Defaults to `warm-<recipe>.<ciDomain>`."; };
          stack = mkOption { type = types.nullOr types.str; default = null; description = "Swarm stack; derived from the domain."; };
          envFile = mkOption { type = types.nullOr types.str; default = null; description = "Env file for the stack deployer."; };
          approved = mkOption { type = types.listOf types.str; default = [ ]; description = "Versions released from the safety gate."; };
          probes = mkOption { type = types.listOf probeModule; default = [ ]; description = "HTTP probes of the health gate."; };
          healthTimeoutSecs = mkOption { type = types.nullOr types.ints.positive; default = null; description = "Per-canonical health timeout."; };
        } // scheduleOptions render.canonicalDefaults;
      });
      default = { };
      description = "Enrolled recipes, by recipe: a canonical deployment `warm-<recipe>` with realistic data.";
    };

    sweep = {
      enable = mkEnableOption "the nightly cold sweep of enrolled recipes";
      onCalendar = mkOption {
        type = types.str;
        default = d.sweep.onCalendar;
        description = "When the sweep runs.";
      };
      maxTests = mkOption {
        type = types.ints.positive;
        default = d.sweep.maxTests;
        description = "At most this many cold runs per sweep.";
      };
      coldCommand = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "ci-cold-test" "--recipe" "{recipe}" "--version" "{version}" "--run" "{run}" ];
        description = "Cold-test argv template; `{recipe}`, `{version}`, `{run}` are substituted per item, never through a shell.";
      };
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = render.duplicateStacks cfg == [ ];
        message = "services.ci-warm: two apps deploy to the same stack(s): ${toString (render.duplicateStacks cfg)}; set `stack` on one of them.";
      }
      {
        assertion = cfg.deployer.kind != "abra" || cfg.deployer.server != null;
        message = "services.ci-warm.deployer.server must name the abra server when deployer.kind = \"abra\".";
      }
      {
        assertion = cfg.keycloak.adminPasswordFile == null || !(lib.hasPrefix builtins.storeDir cfg.keycloak.adminPasswordFile);
        message = "services.ci-warm.keycloak.adminPasswordFile points into the Nix store, where every user can read it; use a path outside it (e.g. from sops-nix or agenix).";
      }
      {
        assertion = cfg.disk.criticalFreePercent <= cfg.disk.warnFreePercent;
        message = "services.ci-warm.disk.criticalFreePercent must not exceed disk.warnFreePercent.";
      }
      {
        assertion = !cfg.sweep.enable || cfg.sweep.coldCommand != [ ];
        message = "services.ci-warm.sweep.coldCommand must be set when the sweep is enabled.";
      }
      {
        assertion = lib.all (a: a.domain != null) (lib.attrValues cfg.apps)
          && (!cfg.traefik.enable || cfg.traefik.domain != null)
          && (!cfg.keycloak.enable || cfg.keycloak.domain != null);
        message = "services.ci-warm: every app (and the traefik/keycloak conveniences) needs a domain.";
      }
      {
        assertion = cfg.canonicals == { } || cfg.ciDomain != null || lib.all (c: c.domain != null) (lib.attrValues cfg.canonicals);
        message = "services.ci-warm.canonicals need ciDomain, or a domain each.";
      }
    ];

    virtualisation.docker.enable = lib.mkDefault true;
    environment.systemPackages = [ cfg.package ];
    environment.etc."ci-warm/config.json".source = configFile;

    systemd.tmpfiles.rules = [ "d ${cfg.stateDir} 0750 root root - -" ];

    systemd.services = lib.mapAttrs
      (name: u: {
        inherit (u) description;
        after = u.after or [ ];
        wants = u.wants or [ ];
        requires = u.requires or [ ];
        wantedBy = u.wantedBy or [ ];
        path = [ pkgs.docker pkgs.git ];
        serviceConfig = u.serviceConfig;
        # A changed config restarts ci-warm-apply on `nixos-rebuild switch`, which starts every
        # reconcile; the reconcile units themselves must not be stopped mid-upgrade by a switch.
        restartTriggers = lib.optional (name == "ci-warm-apply") configFile;
        restartIfChanged = name == "ci-warm-apply";
      })
      units.services;

    systemd.timers = lib.mapAttrs (_: t: { inherit (t) description wantedBy timerConfig; }) units.timers;
  };

  meta.maintainers = [ ];
}
