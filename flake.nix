{
  description = "ci-warm: keeps a CI host's warm Co-op Cloud deployments current without losing their data";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      overlays.default = final: _prev: {
        ci-warm = final.callPackage ./nix/package.nix { };
      };

      packages = forAllSystems (pkgs: rec {
        ci-warm = pkgs.callPackage ./nix/package.nix { };
        default = ci-warm;
      });

      # The module itself: its package defaults to pkgs.ci-warm when the overlay is applied and
      # builds nix/package.nix otherwise. It sets no nixpkgs.overlays, which a configuration
      # with read-only pkgs (as runNixOSTest's nodes) would refuse.
      nixosModules.default = ./modules/ci-warm.nix;
      nixosModules.ci-warm = self.nixosModules.default;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = with pkgs; [ cargo rustc clippy rustfmt rust-analyzer docker git rsync nix ];
        };
      });

      # NixOS VM tests, one file per behaviour (run: nix flake check, or
      # nix build .#checks.x86_64-linux.upgrade), and a VM-less evaluation of the module. They
      # need nixpkgs (and the VM tests KVM), which the project's CI machines do not have;
      # scripts/test.sh runs nix/checks.sh instead.
      checks = forAllSystems (pkgs:
        let
          callTest = file: import file {
            inherit pkgs self;
            demoApp = pkgs.callPackage ./nix/tests/demo-app.nix { };
          };
        in
        {
          upgrade = callTest ./nix/tests/upgrade.nix;
          rollback = callTest ./nix/tests/rollback.nix;
          held-major = callTest ./nix/tests/held-major.nix;
          # No VM: the module under the real module system (assertions, example system).
          module-eval = import ./nix/tests/module-eval.nix { inherit pkgs self nixpkgs; };
        });
    };
}
