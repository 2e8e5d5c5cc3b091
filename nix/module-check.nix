# Evaluates modules/ci-warm.nix itself, without nixpkgs, against a small stand-in for the parts
# of `lib` and `pkgs` it uses (nix/checks.sh runs it). Two things are checked:
#   - every option declaration, submodules included, has a type, a default and a description,
#     and its default (and a plain example) passes the type's check;
#   - the module's `config` evaluates on the given settings, and what it hands NixOS has the
#     properties the module promises (restart on config change, secrets only as credentials).
# The stand-in types check values the way nixpkgs' do for these simple cases; it does not
# model merging, priorities or submodule `config`, which need the real module system (the
# flake's VM tests evaluate the module with nixpkgs).
# Result: a list of problems, empty when everything holds.
{ settings ? import ./example-settings.nix }:
let
  inherit (builtins)
    all any attrNames attrValues concatLists concatStringsSep elem filter isAttrs isBool
    isFunction isInt isList isString map mapAttrs toJSON;
  render = import ../modules/render.nix;
  optional = c: x: if c then [ x ] else [ ];
  mapAttrsToList = f: a: map (n: f n a.${n}) (attrNames a);
  hasInfix = needle: s: builtins.replaceStrings [ needle ] [ "" ] s != s;

  mkType = name: check: extra: { _type = "option-type"; inherit name check; } // extra;
  types = {
    bool = mkType "bool" isBool { };
    str = mkType "str" isString { };
    package = mkType "package" (x: isAttrs x && x ? outPath || isString x) { };
    enum = vs: mkType "enum" (x: elem x vs) { };
    oneOf = ts: mkType "oneOf" (x: any (t: t.check x) ts) { };
    strMatching = re: mkType "strMatching" (x: isString x && builtins.match re x != null) { };
    nullOr = t: mkType "nullOr ${t.name}" (x: x == null || t.check x) { nested = t; };
    listOf = t: mkType "listOf ${t.name}" (x: isList x && all t.check x) { nested = t; };
    attrsOf = t: mkType "attrsOf ${t.name}" (x: isAttrs x && all t.check (attrValues x)) { nested = t; };
    submodule = m: mkType "submodule" isAttrs {
      optionsFor = name: (if isFunction m then m { inherit name; config = { }; inherit lib; } else m).options;
    };
    ints = {
      positive = mkType "ints.positive" (x: isInt x && x > 0) { };
      unsigned = mkType "ints.unsigned" (x: isInt x && x >= 0) { };
      between = lo: hi: mkType "ints.between" (x: isInt x && x >= lo && x <= hi) { };
    };
  };
  lib = {
    inherit types;
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = what: lib.mkOption { type = types.bool; default = false; description = "Whether to enable ${what}."; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkDefault = x: x;
    literalExpression = text: { _type = "literalExpression"; inherit text; };
    optionalAttrs = c: a: if c then a else { };
    inherit optional;
    optionals = c: l: if c then l else [ ];
    getExe = p: "${p.outPath}/bin/${p.meta.mainProgram}";
    inherit mapAttrs;
  };
  fakePath = name: "/nix/store/00000000000000000000000000000000-${name}";
  pkg = name: { outPath = fakePath name; meta.mainProgram = name; };
  pkgs = {
    ci-warm = pkg "ci-warm";
    git = pkg "git";
    formats.json = _: { generate = name: value: fakePath "${name}?${toJSON value}"; };
    runCommand = name: _: script: fakePath "${name}!${script}";
  };

  # The option values as the module system would compute them from the declarations: each
  # declared option takes the setting or its default, submodules per entry. A setting no option
  # declares is a problem, as it is an error in NixOS.
  fromOptions = path: opts: set:
    let
      undeclared = filter (n: !(opts ? ${n})) (attrNames set);
      value = n: o:
        let v = set.${n} or o.default;
        in if !(set ? ${n}) then v else applySub (path ++ [ n ]) o.type v;
    in
    if undeclared != [ ] then throw "undeclared option(s) ${concatStringsSep ", " (map (n: concatStringsSep "." (path ++ [ n ])) undeclared)}"
    else mapAttrs (n: o: if (o._type or null) == "option" then value n o else fromOptions (path ++ [ n ]) o (set.${n} or { })) opts;
  applySub = path: t: v:
    if t ? optionsFor then fromOptions path (t.optionsFor (builtins.elemAt path (builtins.length path - 1))) v
    else if t.name or "" == "nullOr submodule" && v != null then applySub path t.nested v
    else if builtins.substring 0 14 (t.name or "") == "nullOr listOf " && v != null then applySub path t.nested v
    else if builtins.substring 0 7 (t.name or "") == "listOf " && t.nested ? optionsFor then map (fromOptions path (t.nested.optionsFor "")) v
    else if builtins.substring 0 8 (t.name or "") == "attrsOf " && t.nested ? optionsFor then mapAttrs (n: fromOptions (path ++ [ n ]) (t.nested.optionsFor n)) v
    else v;
  cfg = fromOptions [ "services" "ci-warm" ] module.options.services.ci-warm settings;
  module = import ../modules/ci-warm.nix {
    inherit lib pkgs;
    config = {
      services.ci-warm = cfg;
      systemd.package = pkg "systemd";
      virtualisation.docker.package = pkg "docker";
    };
  };

  # --- option declarations ---------------------------------------------------------------
  subOptions = t: if t ? optionsFor then t.optionsFor "<name>" else if t ? nested then subOptions t.nested else null;
  walk = path: o:
    if (o._type or null) == "option" then checkOption path o
    else concatLists (mapAttrsToList (n: walk (path ++ [ n ])) o);
  checkOption = path: o:
    let
      at = concatStringsSep "." path;
      literal = x: isAttrs x && (x._type or null) == "literalExpression";
      sub = if o ? type then subOptions o.type else null;
    in
    optional (!(o ? type)) "${at}: no type"
    ++ optional (!(o ? default)) "${at}: no default"
    ++ optional (!(o ? description) || o.description == "") "${at}: no description"
    ++ optional (o ? type && o ? default && !(o ? defaultText) && !(o.type.check o.default))
      "${at}: the default does not pass its type (${o.type.name})"
    ++ optional (o ? type && o ? example && !(literal o.example) && !(o.type.check o.example))
      "${at}: the example does not pass its type (${o.type.name})"
    ++ (if sub != null then walk (path ++ [ "<name>" ]) sub else [ ]);
  optionProblems = walk [ "services" "ci-warm" ] module.options.services.ci-warm;

  # --- what the module hands NixOS -------------------------------------------------------
  c = module.config.content;
  services = c.systemd.services;
  apply = render.unitName "apply";
  configFile = c.environment.etc."ci-warm/config.json".source;
  secretFiles = optional (cfg.keycloak.adminPasswordFile != null) cfg.keycloak.adminPasswordFile
    ++ attrValues cfg.credentials;
  # Everything of a unit except LoadCredential, where the secret files belong.
  exposed = u: toJSON (u // { serviceConfig = removeAttrs u.serviceConfig [ "LoadCredential" ]; });
  failing = filter (a: !a.assertion) c.assertions;
  # nix/checks.sh renders the JSON and units through render.withDefaults: it must agree with
  # the module's own defaults.
  viaRender = render.withDefaults settings;
  configProblems =
    optional (render.config viaRender != render.config cfg)
      "render.withDefaults and the module's option defaults give different configs"
    ++ optional (map (a: a.message) (render.assertions viaRender) != map (a: a.message) (render.assertions cfg))
      "render.withDefaults and the module's option defaults give different assertions"
    ++
    optional (module.config._type != "if" || module.config.condition != cfg.enable)
      "config is not guarded by `mkIf cfg.enable`"
    ++ map (a: "assertion fails on the settings: ${a.message}") failing
    ++ optional (services ? ${apply} && services.${apply}.restartTriggers != [ configFile ])
      "${apply} does not restart when the config file changes"
    ++ optional (services ? ${apply} && !(elem "multi-user.target" services.${apply}.wantedBy))
      "${apply} is not wanted by multi-user.target"
    ++ concatLists (mapAttrsToList
      (n: u:
        optional (n != apply && u.restartIfChanged) "${n}: a switch would restart (and interrupt) it"
        ++ concatLists (map (f: optional (hasInfix f (exposed u)) "${n}: the secret file ${f} appears outside LoadCredential") secretFiles)
        ++ concatLists (map (f: optional (n != apply && !(any (hasInfix f) (u.serviceConfig.LoadCredential or [ ])))
          "${n}: the secret file ${f} is not loaded as a credential") secretFiles))
      services)
    ++ concatLists (map (f: optional (hasInfix f configFile) "the config file contains the secret file path ${f}") secretFiles)
    ++ optional (attrNames c.systemd.timers == [ ]) "no timers rendered"
    ++ concatLists (mapAttrsToList (n: t: optional (!(elem "timers.target" t.wantedBy)) "${n}.timer is not wanted by timers.target") c.systemd.timers);
in
# The config part needs sound declarations (a default for every option) to evaluate at all.
if optionProblems != [ ] then optionProblems else configProblems
