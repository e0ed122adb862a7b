"""Deploy one hub to one environment: classic ``hubploy deploy``, made safe.

The sequence (each step fails before the next one runs):

1. ``helm dependency update``, skipped while Chart.yaml, its lock, charts/ and the content of each
   ``file://`` dependency match a stamp file (hubploy.charts);
2. decrypt the secret values files just in time (0600 temp files, removed afterwards);
3. get cluster credentials (``Credentials`` passed in, by default the hub's key files; the core never
   imports Prefect blocks);
4. read the release's history while checking that every image in the merged values (every
   ``{name, tag}`` mapping that hubploy.yaml's ``image_check`` wants) is in its registry;
5. when the release has no history, create its namespace if it is missing;
6. stop if the deployed revision was made by hubploy from exactly this chart and these values (its helm
   description carries their digest): nothing to upgrade (``skip_unchanged=False`` upgrades anyway);
7. recover a stuck release, then ``helm upgrade --install --wait --timeout``. Helm renders and
   validates the chart before it changes anything, so a render or schema error leaves the release
   untouched (no separate ``helm template`` pass is needed). An upgrade that fails after changing the
   release (a timeout, a failed hook) is diagnosed from the API (``diagnose``: what was not ready and
   why), then rolled back by hubploy (``--atomic``), and reported as a timeout when it was one;
8. health check: ``GET <hub url>/hub/api`` (helm has already waited for the rollouts); on failure roll
   back and raise :class:`~hubploy.errors.HealthCheckError`.

Each step that decides how the deploy ends returns an ``Ending`` (an ``Outcome``, a message, the error
to raise); ``model.settle`` is the one place that records it in the ``DeployResult``.

Only the release is ever changed; nothing here touches ``os.environ`` (deploys run in threads).

Where each concern lives:

- ``sequence``: the sequence above (``deploy``) and ``rollback_hub``;
- ``model``: options, where a deploy acts, how it ended (``Outcome``, set only by ``settle``);
- ``credentials``: where its cluster and registry credentials come from;
- ``prepare``: release preparation (steps 1 and 2: values, chart dependencies, secrets, digests);
- ``images``: the image check of step 4;
- ``namespaces``: step 5;
- ``release``: helm release operations (history, recovery, upgrade, rollback, uninstall);
- ``diagnose``: what was not ready when an upgrade failed, read from the API;
- ``health_gate``: step 8.
"""

from hubploy.deploy.credentials import Credentials, KeyFileCredentials
from hubploy.deploy.images import check_images, image_references, registry_image_digest
from hubploy.deploy.model import DeployOptions, DeployResult, ImageRef, Logger, Outcome
from hubploy.deploy.prepare import (
    CONFIG_STAMP_PREFIX,
    PreparedValues,
    prepared_values,
    redact_rendered,
    sops_env,
    values_digest,
)
from hubploy.deploy.release import is_transient
from hubploy.deploy.sequence import deploy, rollback_hub

__all__ = [
    "CONFIG_STAMP_PREFIX",
    "Credentials",
    "DeployOptions",
    "DeployResult",
    "ImageRef",
    "KeyFileCredentials",
    "Logger",
    "Outcome",
    "PreparedValues",
    "check_images",
    "deploy",
    "image_references",
    "is_transient",
    "prepared_values",
    "redact_rendered",
    "registry_image_digest",
    "rollback_hub",
    "sops_env",
    "values_digest",
]
