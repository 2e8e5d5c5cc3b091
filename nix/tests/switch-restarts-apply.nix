# A changed config on `nixos-rebuild switch` restarts ci-warm-apply (which starts every reconcile
# with the new config), while a reconcile already running is neither stopped nor restarted: it
# finishes its health gate and rollback undisturbed.
{ pkgs, self, demoApp }:
pkgs.testers.runNixOSTest {
  name = "ci-warm-switch-restarts-apply";
  nodes.machine = {
    imports = [ (import ./common.nix { inherit pkgs self demoApp; }) ];
    # The same system with one setting changed: the rendered config differs, nothing else.
    specialisation.changed.configuration = {
      services.ci-warm.apps.demo.approved = [ "9.9.9+9.9.9" ];
    };
  };
  testScript = ''
    def prop(unit, p):
        return machine.succeed(f"systemctl show -P {p} {unit}").strip()

    machine.wait_for_unit("docker.service")
    machine.succeed("docker swarm init --advertise-addr 127.0.0.1")
    machine.succeed("ci-warm-fixtures images --binary ${demoApp}/bin/demo-app")
    machine.succeed("ci-warm-fixtures recipe /srv/recipes/demo --upto 1.1.0+1.0.0")
    machine.succeed("systemctl start ci-warm-demo.service")
    # ci-warm-apply is active (as after a boot), so a switch that changes it restarts it.
    machine.succeed("systemctl start ci-warm-apply.service")
    machine.wait_until_succeeds("test $(systemctl show -P ActiveState ci-warm-demo.service) = inactive")

    # A never-healthy release: the reconcile sits in its health gate (60 s) before rolling back.
    machine.succeed("ci-warm-fixtures publish /srv/recipes/demo 1.2.0+1.0.0")
    machine.succeed("systemctl start --no-block ci-warm-demo.service")
    machine.wait_until_succeeds("test $(systemctl show -P ActiveState ci-warm-demo.service) = activating")
    demo_run = prop("ci-warm-demo.service", "InvocationID")
    apply_run = prop("ci-warm-apply.service", "InvocationID")
    machine.fail("grep -q 9.9.9 /etc/ci-warm/config.json")

    machine.succeed("/run/current-system/specialisation/changed/bin/switch-to-configuration test")

    machine.succeed("grep -q 9.9.9 /etc/ci-warm/config.json")
    assert prop("ci-warm-apply.service", "InvocationID") != apply_run, "the config change did not restart ci-warm-apply"
    assert prop("ci-warm-demo.service", "InvocationID") == demo_run, "the switch restarted the running reconcile"
    assert prop("ci-warm-demo.service", "ActiveState") == "activating", "the switch stopped the running reconcile"

    # The reconcile finishes on its own: rolled back and recovered (exit 4, a success).
    machine.wait_until_succeeds("test $(systemctl show -P ActiveState ci-warm-demo.service) = inactive", timeout=300)
    assert prop("ci-warm-demo.service", "Result") == "success"
    machine.succeed("grep -q '\"recovered\": true' /var/lib/ci-warm/alerts/*rolled-back.json")
    machine.fail("journalctl -u ci-warm-demo.service | grep -q 'Stopping ci-warm'")
    machine.succeed("curl -fsS http://127.0.0.1:18080/version | grep -q 1.1.0")
  '';
}
