# clippy and rustfmt as derivations (the flake's checks), on the package's own source and
# vendored dependencies, with the flags scripts/test.sh uses.
{ pkgs, ci-warm }:
{
  clippy = ci-warm.overrideAttrs (old: {
    pname = "ci-warm-clippy";
    nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
    buildPhase = ''
      runHook preBuild
      cargo clippy --workspace --all-targets --offline --locked -- -D warnings
      runHook postBuild
    '';
    doCheck = false;
    installPhase = "touch $out";
    postInstall = "";
  });

  rustfmt = pkgs.runCommand "ci-warm-rustfmt"
    {
      nativeBuildInputs = [ pkgs.cargo pkgs.rustfmt ];
      inherit (ci-warm) src;
    } ''
    cp -r $src src && chmod -R u+w src && cd src
    cargo fmt --all -- --check
    touch $out
  '';
}
