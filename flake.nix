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

      nixosModules.default = {
        imports = [ ./modules/ci-warm.nix ];
        nixpkgs.overlays = [ self.overlays.default ];
      };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.system}.default ];
          packages = with pkgs; [ cargo rustc clippy rustfmt rust-analyzer docker git rsync nix ];
        };
      });

      # NixOS VM tests, one file per behaviour (run: nix flake check, or
      # nix build .#checks.x86_64-linux.upgrade). They need KVM and nixpkgs, neither of which
      # the project's CI machines have; scripts/test.sh runs the pure checks instead.
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
        });
    };
}
