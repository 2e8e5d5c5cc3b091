# A major release is held with one alert over two runs; the data is untouched.
{ pkgs, self, demoApp }:
pkgs.testers.runNixOSTest {
  name = "ci-warm-held-major";
  nodes.machine = import ./common.nix { inherit pkgs self demoApp; };
  testScript = ''
    machine.wait_for_unit("docker.service")
    machine.succeed("docker swarm init --advertise-addr 127.0.0.1")
    machine.succeed("ci-warm-fixtures images --binary ${demoApp}/bin/demo-app")
    machine.succeed("ci-warm-fixtures recipe /srv/recipes/demo --upto 1.0.0+1.0.0")
    machine.succeed("systemctl start ci-warm-demo.service")
    marker = machine.succeed("cat $(docker volume inspect -f '{{.Mountpoint}}' demo_ci_test_data)/marker")
    machine.succeed("ci-warm-fixtures publish /srv/recipes/demo 2.0.0+2.0.0")
    machine.succeed("systemctl start ci-warm-demo.service")
    machine.succeed("systemctl start ci-warm-demo.service")
    count = machine.succeed("ls /var/lib/ci-warm/alerts/*-demo-held-major.json | wc -l").strip()
    assert count == "1", f"one held-major alert over two runs, got {count}"
    machine.succeed("grep -q '\"last_good\": \"1.0.0+1.0.0\"' /var/lib/ci-warm/demo/state.json")
    after = machine.succeed("cat $(docker volume inspect -f '{{.Mountpoint}}' demo_ci_test_data)/marker")
    assert marker == after
  '';
}
