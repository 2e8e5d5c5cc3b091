# The option docs of services.ci-warm from nixpkgs' nixosOptionsDoc, compared with the option
# list generated into docs/configuration.md (NixOS options): the same options, the same
# descriptions. nix/checks.sh generates that list without nixpkgs (nix/module-check.nix);
# this proves the stand-in sees exactly the options the real module system does.
{ pkgs, self, nixpkgs }:
let
  inherit (pkgs) lib;
  eval = nixpkgs.lib.nixosSystem {
    modules = [
      self.nixosModules.default
      { nixpkgs.hostPlatform = pkgs.stdenv.hostPlatform.system; boot.isContainer = true; }
    ];
  };
  doc = pkgs.nixosOptionsDoc {
    options = { services.ci-warm = eval.options.services.ci-warm; };
    # The list names no source files (they are store paths here).
    transformOptions = o: o // { declarations = [ ]; };
  };
in
pkgs.runCommand "ci-warm-option-docs" { nativeBuildInputs = [ pkgs.python3 ]; } ''
  python3 ${./option-docs.py} nixpkgs ${doc.optionsJSON}/share/doc/nixos/options.json ${../docs/configuration.md}
  mkdir -p $out
  cp ${doc.optionsCommonMark} $out/options.md
''
