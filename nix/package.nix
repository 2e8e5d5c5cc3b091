{ lib, rustPlatform, makeBinaryWrapper, git, rsync, vmTests ? { } }:

rustPlatform.buildRustPackage {
  pname = "ci-warm";
  version = "0.1.0";

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../snapshot
      ../reconciler
      ../tests
      ../examples
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [ "-p" "ci-warm" ];

  # Recipes' tags and release notes are read with the git CLI. Appended to PATH, so a host's
  # own git still wins (the NixOS module puts git on its units' PATH anyway).
  nativeBuildInputs = [ makeBinaryWrapper ];
  postInstall = ''
    wrapProgram $out/bin/ci-warm --suffix PATH : ${lib.makeBinPath [ git ]}
  '';

  nativeCheckInputs = [ git rsync ];
  # The tests that need neither Docker nor root: the reconciler's unit tests (config, gate,
  # versions, state machine, health decisions, deployer command lines against a fake abra) and
  # the git-backed recipe tests. The snapshot crate's tests chown and mknod (root), and the
  # swarm tests need a Docker engine: both run in scripts/test.sh and the NixOS VM tests.
  cargoTestFlags = [ "-p" "ci-warm" ];

  # The NixOS VM tests (nix/tests/<behaviour>.nix), as the flake passes them:
  # `nix build .#ci-warm.tests.rollback`.
  passthru.tests = vmTests;

  meta = {
    description = "Keeps a CI host's warm Co-op Cloud deployments current without losing their data";
    longDescription = ''
      Health-gated upgrade-with-rollback (version and data) of Docker Swarm apps deployed with
      abra, with atomic verified volume snapshots, a safety gate for major bumps and manual
      migrations, and alert files for the CI's builder loop.
    '';
    license = lib.licenses.agpl3Plus;
    mainProgram = "ci-warm";
    platforms = lib.platforms.linux;
    maintainers = [ ];
  };
}
