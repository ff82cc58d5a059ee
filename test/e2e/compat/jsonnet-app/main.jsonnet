local kube = import 'lib/kube.libsonnet';
local params = import 'env/params.libsonnet';

function(tier='frontend') {
  deployment: kube.deployment('guestbook-' + tier, params.image, params.replicas),
  service: kube.service('guestbook-' + tier, 80),
  settings: kube.configMap('guestbook-settings', {
    tier: tier,
    environment: std.extVar('environment'),
  }),
}
