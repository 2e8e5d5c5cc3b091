{
  description = "ci-warm: keeps a CI host's warm Co-op Cloud deployments current without losing their data";

  # A release branch, not unstable: the module is tested against what CI hosts run. No
  # flake.lock is committed from the machines this was written on (they are offline): run
  # `nix flake lock` where the network exists and commit the result.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # pkgs.ci-warm, for configurations that want the package from their own nixpkgs.
      overlays.default = final: _prev: {
        ci-warm = final.callPackage ./nix/package.nix { };
      };

      packages = forAllSystems (pkgs: rec {
        ci-warm = pkgs.callPackage ./nix/package.nix {
          # `nix build .#ci-warm.tests.<behaviour>` runs a VM test of this very build.
          vmTests = lib.getAttrs [ "upgrade" "rollback" "held-major" "switch-restarts-apply" ]
            self.checks.${pkgs.stdenv.hostPlatform.system};
        };
        default = ci-warm;
      });

      # The module, with its package defaulting (mkDefault, lanzaboote's way) to this flake's
      # build, so no overlay is needed; `services.ci-warm.package = pkgs.ci-warm;` (with the
      # overlay) or any other build overrides it. modules/ci-warm.nix on its own, as nixpkgs
      # would carry it, takes `pkgs.ci-warm` (mkPackageOption).
      nixosModules.ci-warm = { lib, pkgs, ... }: {
        imports = [ ./modules/ci-warm.nix ];
        services.ci-warm.package = lib.mkDefault
          (self.packages.${pkgs.stdenv.hostPlatform.system}.ci-warm or (pkgs.callPackage ./nix/package.nix { }));
      };
      nixosModules.default = self.nixosModules.ci-warm;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = with pkgs; [ cargo rustc clippy rustfmt rust-analyzer docker git rsync nix ];
        };
      });

      # `nix flake check` (or `nix build .#checks.x86_64-linux.<name>`): the package build with
      # the tests that need neither root nor Docker, clippy, rustfmt, the option docs against
      # docs/configuration.md, the module under the real module system, and the NixOS VM tests,
      # one file per behaviour. They need nixpkgs (and the VM tests KVM), which the project's CI
      # machines do not have; scripts/test.sh runs nix/checks.sh instead.
      checks = forAllSystems (pkgs:
        let
          system = pkgs.stdenv.hostPlatform.system;
          ci-warm = self.packages.${system}.ci-warm;
          lints = import ./nix/lints.nix { inherit pkgs ci-warm; };
          callTest = file: import file {
            inherit pkgs self;
            demoApp = pkgs.callPackage ./nix/tests/demo-app.nix { };
          };
        in
        {
          package = ci-warm;
          inherit (lints) clippy rustfmt;
          option-docs = import ./nix/option-docs.nix { inherit pkgs self nixpkgs; };
          # No VM: the module under nixpkgs' real module system (assertions, types, example system).
          module-eval = import ./nix/tests/module-eval.nix { inherit pkgs self nixpkgs; };
          upgrade = callTest ./nix/tests/upgrade.nix;
          rollback = callTest ./nix/tests/rollback.nix;
          held-major = callTest ./nix/tests/held-major.nix;
          switch-restarts-apply = callTest ./nix/tests/switch-restarts-apply.nix;
        });
    };
}
