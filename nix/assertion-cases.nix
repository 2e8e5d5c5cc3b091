# Impossible settings the module must refuse, each as a change to nix/example-settings.nix and
# a phrase its assertion message must contain. nix/checks.sh evaluates every case through
# modules/render.nix (the module's assertions) and fails unless each one is refused with that
# message; the unchanged example must pass every assertion.
let
  example = import ./example-settings.nix;
  # Nested settings merge like NixOS definitions do (attribute sets deeply, the rest replaced).
  update = a: b:
    a // builtins.mapAttrs
      (n: v: if builtins.isAttrs v && builtins.isAttrs (a.${n} or null) then update a.${n} v else v)
      b;
  case = name: change: expect: { inherit name expect; settings = update example change; };
in
[
  (case "two apps on one stack" { apps.other = { domain = "traefik.ci.example.org"; }; }
    "services.ci-warm.apps.other and services.ci-warm.traefik deploy to the same swarm stack `traefik_ci_example_org`")
  (case "an app and a canonical on one stack" { apps.other = { domain = "demo2.ci.example.org"; stack = "warm-nextcloud_ci_example_org"; }; }
    "services.ci-warm.apps.other and services.ci-warm.canonicals.nextcloud deploy to the same swarm stack")
  (case "a canonical's app name also under apps" { apps.warm-nextcloud = { domain = "wn.ci.example.org"; }; }
    "canonicals.nextcloud: its canonical deployment is the app `warm-nextcloud`, which services.ci-warm.apps.warm-nextcloud also defines")
  (case "convenience and app of the same name" { apps.traefik = { domain = "t2.ci.example.org"; stack = "t2"; }; }
    "traefik.enable and apps.traefik both define the app `traefik`")
  (case "an app named like ci-warm's own unit" { apps.sweep = { domain = "sweep.ci.example.org"; }; }
    "services.ci-warm.apps.sweep: the name is taken by ci-warm's own unit ci-warm-sweep.service")
  (case "an app name that is not a valid name" { apps.Demo = { domain = "x.ci.example.org"; }; }
    "services.ci-warm.apps.Demo: the app name must match")
  (case "an app without a domain" { apps.nodomain = { }; }
    "services.ci-warm.apps.nodomain.domain must be set")
  (case "an enabled convenience without a domain" { keycloak.domain = null; }
    "services.ci-warm.keycloak.domain must be set")
  (case "a probe without a URL" { apps.demo.probes = [ { status = 204; } ]; }
    "services.ci-warm.apps.demo.probes.0.url must be set")
  (case "a canonical without any domain" { ciDomain = null; }
    "services.ci-warm.canonicals.nextcloud: needs a domain")
  (case "abra without a server" { deployer.server = null; }
    "services.ci-warm.deployer.server must name the abra server")
  (case "abra that the units cannot find" { deployer.abraExecutable = "abra"; }
    "the units' PATH has no abra")
  (case "the keycloak password in the store" { keycloak.adminPasswordFile = "/nix/store/0000-keycloak-password"; }
    "services.ci-warm.keycloak.adminPasswordFile points into the Nix store")
  (case "a credential in the store" { credentials.chat = "/nix/store/0000-token"; }
    "services.ci-warm.credentials.chat points into the Nix store")
  (case "a credential under ci-warm's own name" { credentials.keycloak-admin-password = "/run/secrets/x"; }
    "must not be `keycloak-admin-password`")
  (case "realm management without a URL" { keycloak = { enable = false; url = null; }; }
    "services.ci-warm.keycloak.url must be set")
  (case "reaping realms without the admin password" { keycloak = { adminPasswordFile = null; reap.enable = true; }; }
    "keycloak.reap.enable needs keycloak.adminPasswordFile")
  (case "reaping realms without a liveness source" { keycloak.liveRuns.stackPattern = null; }
    "keycloak.reap.enable needs exactly one of keycloak.liveRuns.stackLabel and keycloak.liveRuns.stackPattern")
  (case "reaping realms with two liveness sources" { keycloak.liveRuns.stackLabel = "ci.run"; }
    "keycloak.reap.enable needs exactly one of")
  (case "the sweep without a cold command" { sweep.coldCommand = [ ]; }
    "services.ci-warm.sweep.coldCommand must be set")
  (case "an empty alert hook" { alerts.onAlert = [ ]; }
    "services.ci-warm.alerts.onAlert must be null or a non-empty argv list")
  (case "critical above warning" { disk = { criticalFreePercent = 20; warnFreePercent = 10; }; }
    "services.ci-warm.disk.criticalFreePercent (20) must not exceed disk.warnFreePercent (10)")
  (case "free-form settings that are not an object" { settings = [ 1 ]; }
    "services.ci-warm.settings must be an attribute set")
  (case "a free-form setting a typed option overrides" { settings.health.timeout_secs = 10; }
    "services.ci-warm.settings.health.timeout_secs is also set by a typed option")
  (case "a free-form app setting a typed app option overrides" { settings.apps.demo.domain = "other.ci.example.org"; }
    "services.ci-warm.settings.apps.demo.domain is also set by a typed option")
  (case "an env file the hardened units cannot see" { deployer = { kind = "stack"; server = null; }; apps.demo.envFile = "/root/demo.env"; }
    "services.ci-warm.apps.demo.envFile is \"/root/demo.env\", under /home, /root or /run/user")
  (case "a relative env file" { apps.demo.envFile = "demo.env"; }
    "services.ci-warm.apps.demo.envFile must be an absolute path")
]
