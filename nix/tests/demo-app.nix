# The demo app and its fixture tool, built from this repository for the VM tests.
{ rustPlatform, lib }:

rustPlatform.buildRustPackage {
  pname = "ci-warm-demo-fixtures";
  version = "0.1.0";
  src = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.unions [
      ../../Cargo.toml
      ../../Cargo.lock
      ../../snapshot
      ../../reconciler
      ../../tests
      ../../examples
    ];
  };
  cargoLock.lockFile = ../../Cargo.lock;
  cargoBuildFlags = [ "-p" "ci-warm-demo-app" "-p" "ci-warm-tests" ];
  doCheck = false;
  RUSTFLAGS = "-C target-feature=+crt-static";
  meta.mainProgram = "ci-warm-fixtures";
}
