# Settings the option types refuse (NixOS: "is not of type"), each as a change to
# nix/example-settings.nix and a phrase the refusal must contain. nix/checks.sh runs each through
# nix/module-check.nix (the stand-in types); the flake's module-eval check runs them under
# nixpkgs' module system, where each must fail to evaluate.
let
  example = import ./example-settings.nix;
  update = a: b:
    a // builtins.mapAttrs
      (n: v: if builtins.isAttrs v && builtins.isAttrs (a.${n} or null) then update a.${n} v else v)
      b;
  case = name: change: expect: { inherit name expect; settings = update example change; };
in
[
  (case "a relative metrics file" { metricsFile = "ci-warm.prom"; }
    "services.ci-warm.metricsFile: \"ci-warm.prom\" is not of type")
  (case "a relative state dir" { stateDir = "var/lib/ci-warm"; }
    "services.ci-warm.stateDir: \"var/lib/ci-warm\" is not of type `path`")
  (case "a relative Docker root" { disk.dockerRoot = "docker"; }
    "services.ci-warm.disk.dockerRoot: \"docker\" is not of type `path`")
  (case "a relative writable path for the sweep" { sweep.readWritePaths = [ "ci-runs" ]; }
    "services.ci-warm.sweep.readWritePaths.0: \"ci-runs\" is not of type `path`")
]
