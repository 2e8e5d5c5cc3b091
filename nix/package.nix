{ lib, rustPlatform, git, rsync }:

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

  nativeCheckInputs = [ git rsync ];
  # The tests that need no Docker: unit tests of every crate and the git-backed recipe tests.
  # The swarm tests run in scripts/test.sh and in the NixOS VM tests (checks).
  cargoTestFlags = [ "-p" "ci-warm-snapshot" "-p" "ci-warm" ];
  checkFlags = [ "--skip" "swarm" ];

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
