# A never-healthy release is rolled back with its data restored, and alerts rolled-back.
{ pkgs, self, demoApp }:
pkgs.testers.runNixOSTest {
  name = "ci-warm-rollback";
  nodes.machine = import ./common.nix { inherit pkgs self demoApp; };
  testScript = ''
    machine.wait_for_unit("docker.service")
    machine.succeed("docker swarm init --advertise-addr 127.0.0.1")
    machine.succeed("ci-warm-fixtures images --binary ${demoApp}/bin/demo-app")
    machine.succeed("ci-warm-fixtures recipe /srv/recipes/demo --upto 1.1.0+1.0.0")
    machine.succeed("systemctl start ci-warm-demo.service")
    marker = machine.succeed("cat $(docker volume inspect -f '{{.Mountpoint}}' demo_ci_test_data)/marker")
    machine.succeed("ci-warm-fixtures publish /srv/recipes/demo 1.2.0+1.0.0")
    # Exit 4 (rolled back and recovered) is a success for the unit.
    machine.succeed("systemctl start ci-warm-demo.service")
    machine.succeed("grep -l '\"kind\": \"rolled-back\"' /var/lib/ci-warm/alerts/*.json")
    machine.succeed("grep -q '\"recovered\": true' /var/lib/ci-warm/alerts/*rolled-back.json")
    after = machine.succeed("cat $(docker volume inspect -f '{{.Mountpoint}}' demo_ci_test_data)/marker")
    assert marker == after, "the marker must be restored by the rollback"
    machine.succeed("curl -fsS http://127.0.0.1:18080/version | grep -q 1.0.0")
  '';
}
