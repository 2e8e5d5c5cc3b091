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
# With `report = "options"`: every option's name, default and description instead, for the
# generated option list in docs/configuration.md.
{ settings ? import ./example-settings.nix, report ? "problems" }:
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
    # nixpkgs: anything coercible to a string that starts with "/" (path literals included).
    path = mkType "path" (x: (builtins.isPath x || isString x || isAttrs x && x ? outPath) && builtins.substring 0 1 (toString x) == "/") { };
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
    # nixpkgs' lib.mkPackageOption for a top-level attribute: pkgs.<name>, shown as such.
    mkPackageOption = pkgs': name: { default ? [ name ], ... }:
      let attr = if isList default then builtins.head default else default; in
      lib.mkOption {
        type = types.package;
        default = pkgs'.${attr};
        defaultText = lib.literalExpression "pkgs.${attr}";
        description = "The ${name} package to use.";
      };
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
    formats.json = _: { type = mkType "JSON value" (x: isAttrs x || isList x || isString x || isBool x || isInt x || x == null) { }; generate = name: value: fakePath "${name}?${toJSON value}"; };
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
  # NixOS' utils.escapeSystemdExecArgs, as nixos/lib/utils.nix defines it (the module takes it
  # from `utils`; render.nix has its own copy, which checks.sh compares against systemd).
  utils.escapeSystemdExecArgs = args: concatStringsSep " " (map
    (arg: builtins.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (toJSON (if isString arg then arg else toString arg)))
    args);
  module = import ../modules/ci-warm.nix {
    inherit lib pkgs utils;
    config = {
      services.ci-warm = cfg;
      systemd.package = pkg "systemd";
      virtualisation.docker.package = pkg "docker";
    };
  };

  # --- the settings' values against their options' types -----------------------------------
  # (NixOS refuses a value its option's type rejects with "is not of type"; so does this.)
  isOption = o: (o._type or null) == "option";
  typeName = t: t.name or "?";
  hasPrefix = p: s': builtins.substring 0 (builtins.stringLength p) s' == p;
  checkValue = path: t: v:
    let at = concatStringsSep "." path; in
    if t ? optionsFor then
      (if isAttrs v then checkSet path (t.optionsFor (builtins.elemAt path (builtins.length path - 1))) v
       else [ "${at}: ${toJSON v} is not of type `submodule`" ])
    else if hasPrefix "nullOr " (typeName t) then (if v == null then [ ] else checkValue path t.nested v)
    else if hasPrefix "listOf " (typeName t) then
      (if isList v then concatLists (builtins.genList (i: checkValue (path ++ [ (toString i) ]) t.nested (builtins.elemAt v i)) (builtins.length v))
       else [ "${at}: ${toJSON v} is not of type `${typeName t}`" ])
    else if hasPrefix "attrsOf " (typeName t) then
      (if isAttrs v then concatLists (mapAttrsToList (n: checkValue (path ++ [ n ]) t.nested) v)
       else [ "${at}: ${toJSON v} is not of type `${typeName t}`" ])
    else optional (!(t.check v)) "${at}: ${toJSON (if builtins.isPath v then toString v else v)} is not of type `${typeName t}`";
  checkSet = path: opts: set:
    concatLists (mapAttrsToList
      (n: v: if !(opts ? ${n}) then [ ]
        else if isOption opts.${n} then checkValue (path ++ [ n ]) opts.${n}.type v
        else if isAttrs v then checkSet (path ++ [ n ]) opts.${n} v
        else [ "${concatStringsSep "." (path ++ [ n ])}: not an attribute set" ])
      set);
  typeProblems = checkSet [ "services" "ci-warm" ] module.options.services.ci-warm settings;

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

  # --- the option list ---------------------------------------------------------------------
  # nixosOptionsDoc writes a list's submodule options as `*`, an attribute set's as `<name>`.
  placeholder = t:
    if hasPrefix "listOf " (typeName t) then "*"
    else if hasPrefix "nullOr " (typeName t) then placeholder t.nested
    else "<name>";
  listOptions = path: o:
    if (o._type or null) == "option" then
      [ {
        name = concatStringsSep "." path;
        description = o.description;
        default = if o ? defaultText then o.defaultText.text else toJSON o.default;
      } ]
      ++ (let sub = subOptions o.type; in if sub != null then listOptions (path ++ [ (placeholder o.type) ]) sub else [ ])
    else concatLists (mapAttrsToList (n: listOptions (path ++ [ n ])) o);

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
  stateDirectory = render.stateDirectory cfg;
  exe = lib.getExe cfg.package;
  reconciled = attrNames (render.schedules cfg);
  isReconcile = n: elem n (map render.unitName reconciled);
  restoreCaps = render.privileges.restore.CapabilityBoundingSet;
  pruneCaps = render.privileges.prune.CapabilityBoundingSet;
  jobArgv = {
    ci-warm-sweep = [ "sweep" ];
    ci-warm-disk-check = [ "disk" "check" ];
    ci-warm-disk-prune = [ "disk" "prune" ];
    ci-warm-realm-reap = [ "realm" "reap" "--live-from-swarm" ];
  };
  argv = n: [ exe ] ++ (if isReconcile n then [ "reconcile" "--wait" (builtins.substring 8 100 n) ] else jobArgv.${n});
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
    ++ optional (failing == [ ] && render.recursiveUpdate (render.config cfg) cfg.settings != render.config cfg)
      "a key of `settings` does not reach the config file"
    ++ optional (module.options.services.ci-warm.package.defaultText.text or "" != "pkgs.ci-warm")
      "package is not mkPackageOption pkgs \"ci-warm\""
    # The state dir: StateDirectory= under /var/lib, tmpfiles elsewhere, never both or neither.
    ++ concatLists (mapAttrsToList
      (n: u: optional (n != apply && (u.serviceConfig ? StateDirectory) != (stateDirectory != null))
        "${n}: StateDirectory= does not match stateDir ${toString cfg.stateDir}")
      services)
    ++ optional (c.systemd.tmpfiles.settings.condition != (stateDirectory == null))
      "systemd.tmpfiles.settings must make the state dir exactly when it is not under /var/lib"
    # Privileges: an allow-list filter everywhere; capabilities only where snapshots are
    # restored (reconciles) or deleted (disk prune).
    ++ concatLists (mapAttrsToList
      (n: u:
        let
          sc = u.serviceConfig;
          caps = filter (x: x != "") (sc.CapabilityBoundingSet or [ "(unset)" ]);
          allowed = if isReconcile n then restoreCaps else if n == "ci-warm-disk-prune" then pruneCaps else [ ];
        in
        optional (builtins.head (sc.SystemCallFilter or [ "" ]) != "@system-service")
          "${n}: SystemCallFilter is not an allow-list starting with @system-service"
        ++ optional (!(all (x: elem x allowed) caps))
          "${n}: capabilities ${toJSON caps} beyond what it needs ${toJSON allowed}"
        ++ optional (!(isReconcile n) && !(elem "~@privileged" (sc.SystemCallFilter or [ ])))
          "${n}: does not restore, so must drop @privileged"
        ++ optional (n != apply && sc.ExecStart != utils.escapeSystemdExecArgs (argv n))
          "${n}: ExecStart is not utils.escapeSystemdExecArgs of its argv")
      services)
    ++ optional (attrNames c.systemd.timers == [ ]) "no timers rendered"
    ++ concatLists (mapAttrsToList (n: t: optional (!(elem "timers.target" t.wantedBy)) "${n}.timer is not wanted by timers.target") c.systemd.timers);
in
# The config part needs sound declarations (a default for every option) to evaluate at all.
if report == "options" then listOptions [ "services" "ci-warm" ] module.options.services.ci-warm
else if optionProblems != [ ] then optionProblems
else if typeProblems != [ ] then typeProblems
else configProblems
