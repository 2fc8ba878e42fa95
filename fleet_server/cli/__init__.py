"""``edgeserve fleet``: run the fleet server and drive it (releases, devices, rollouts,
experiments, broker files). Commands parse arguments and call
:class:`~edgeserve.fleet_server.client.FleetClient` or the library; errors are EdgeServeError
subclasses, printed as one line by the root CLI.

Where the server is: ``--server URL --token T`` (or ``EDGESERVE_FLEET_URL`` /
``EDGESERVE_FLEET_TOKEN``), else read from ``--config fleet.toml`` (default ``./fleet.toml``).

- ``group``: the ``fleet`` group and ``serve``; ``common``: what every command shares.
- ``admin``: ``init``, ``release`` (upload, sign, list), ``broker-config``, ``audit``,
  ``stats``.
- ``devices``: ``device add`` / ``list``.
- ``rollouts``: ``rollout start`` / ``status`` / ``pause`` / ``resume`` / ``abort`` /
  ``rollback``.
- ``experiments``: ``experiment start`` / ``report`` / ``promote``.
"""

from __future__ import annotations

from . import admin
from .devices import device
from .experiments import experiment
from .group import fleet
from .rollouts import rollout

__all__ = ["fleet"]

for _command in (
    device,
    rollout,
    experiment,
    admin.init,
    admin.broker_config,
    admin.release,
    admin.audit,
    admin.stats,
):
    fleet.add_command(_command)
