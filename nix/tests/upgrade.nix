# A newer safe release is deployed through the health gate and the data marker survives.
{ pkgs, self, demoApp }:
pkgs.testers.runNixOSTest {
  name = "ci-warm-upgrade";
  nodes.machine = import ./common.nix { inherit pkgs self demoApp; };
  testScript = ''
    machine.wait_for_unit("docker.service")
    machine.succeed("docker swarm init --advertise-addr 127.0.0.1")
    machine.succeed("ci-warm-fixtures images --binary ${demoApp}/bin/demo-app")
    machine.succeed("ci-warm-fixtures recipe /srv/recipes/demo --upto 1.0.0+1.0.0")
    machine.succeed("systemctl start ci-warm-demo.service")
    machine.succeed("curl -fsS http://127.0.0.1:18080/health")
    marker = machine.succeed("cat $(docker volume inspect -f '{{.Mountpoint}}' demo_ci_test_data)/marker")
    machine.succeed("ci-warm-fixtures publish /srv/recipes/demo 1.1.0+1.0.0")
    machine.succeed("systemctl start ci-warm-demo.service")
    machine.succeed("grep -q '\"last_good\": \"1.1.0+1.0.0\"' /var/lib/ci-warm/demo/state.json")
    after = machine.succeed("cat $(docker volume inspect -f '{{.Mountpoint}}' demo_ci_test_data)/marker")
    assert marker == after, "the data marker must survive the upgrade"
    machine.succeed("test -z \"$(ls /var/lib/ci-warm/alerts/*.json 2>/dev/null)\"")
  '';
}
