# Shared VM set-up: Docker with a single-node swarm, the demo images and recipe, and
# services.ci-warm managing the demo app with the stack deployer.
{ pkgs, self, demoApp }:
{
  imports = [ self.nixosModules.default ];
  virtualisation.docker.enable = true;
  virtualisation.diskSize = 4096;
  virtualisation.memorySize = 2048;
  environment.systemPackages = [ demoApp pkgs.git pkgs.curl ];
  # Each test builds the swarm and the recipe first, then starts the reconcile itself: the boot
  # must not run one before (ci-warm-apply starts every reconcile when multi-user.target is
  # reached), and the disk watch must not add alerts the tests count.
  systemd.services.ci-warm-apply.wantedBy = pkgs.lib.mkForce [ ];
  services.ci-warm = {
    enable = true;
    disk.check.enable = false;
    deployer.kind = "stack";
    health.timeoutSecs = 60;
    apps.demo = {
      recipe = "demo";
      repo = "/srv/recipes/demo";
      domain = "demo.ci.test";
      envFile = "/etc/ci-warm/demo.env";
      initialVersion = "1.0.0+1.0.0";
      probes = [ { url = "http://127.0.0.1:18080/health"; } ];
      # The tests start the units by hand.
      onCalendar = "yearly";
    };
  };
  environment.etc."ci-warm/demo.env".text = ''
    TYPE=demo
    DOMAIN=demo.ci.test
    PORT=18080
    COMPOSE_FILE=compose.yml
  '';
}
