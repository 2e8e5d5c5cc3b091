# The module under nixpkgs' real module system, without a VM: the example settings evaluate to a
# system whose assertions all hold (its toplevel derivation can be instantiated), and every case
# of nix/assertion-cases.nix is refused with its message. This is what nix/module-check.nix
# approximates with a stand-in `lib` on machines without nixpkgs.
{ pkgs, self, nixpkgs }:
let
  inherit (pkgs) lib;
  system = settings: nixpkgs.lib.nixosSystem {
    modules = [
      self.nixosModules.default
      {
        nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system;
        boot.isContainer = true; # no boot loader or file systems to declare
        system.stateVersion = lib.trivial.release;
        services.ci-warm = settings;
      }
    ];
  };
  failing = settings:
    map (a: a.message) (lib.filter (a: !a.assertion) (system settings).config.assertions);
  example = system (import ../example-settings.nix);
  cases = import ../assertion-cases.nix;
  notRefused = lib.filter (c: !(lib.any (lib.hasInfix c.expect) (failing c.settings))) cases;
  # Ill-typed settings must not evaluate at all (the module system's "is not of type").
  typeCases = import ../type-cases.nix;
  typeAccepted = lib.filter
    (c: (builtins.tryEval (builtins.deepSeq (system c.settings).config.services.ci-warm null)).success)
    typeCases;
  unitNames = lib.attrNames example.config.systemd.services;
in
assert lib.assertMsg (failing (import ../example-settings.nix) == [ ])
  "the example settings fail: ${lib.concatStringsSep "; " (failing (import ../example-settings.nix))}";
assert lib.assertMsg (notRefused == [ ])
  "not refused: ${lib.concatMapStringsSep ", " (c: c.name) notRefused}";
assert lib.assertMsg (typeAccepted == [ ])
  "ill-typed settings accepted: ${lib.concatMapStringsSep ", " (c: c.name) typeAccepted}";
assert lib.assertMsg (example.config.systemd.services.ci-warm-apply.restartTriggers != [ ])
  "ci-warm-apply has no restartTriggers";
pkgs.runCommand "ci-warm-module-eval"
{
  # Instantiating the toplevel forces every assertion and warning of the example system.
  toplevel = builtins.unsafeDiscardStringContext example.config.system.build.toplevel.drvPath;
  units = lib.concatStringsSep " " (lib.filter (lib.hasPrefix "ci-warm-") unitNames);
}
''
  echo "example system: $toplevel" > $out
  echo "units: $units" >> $out
  echo "${toString (lib.length cases)} impossible settings refused" >> $out
  echo "${toString (lib.length typeCases)} ill-typed settings refused" >> $out
''
