"""The fleet server: releases, MQTT desired state, rollouts and experiments.

Modules, one concept each (nothing is imported here, so ``edgeserve fleet --help`` stays fast):

- :mod:`.config` ``fleet.toml``; :mod:`.db` SQLite/PostgreSQL handle; :mod:`.store` schema and
  queries;
- :mod:`.releases` verify and store signed bundles; :mod:`.desired` build and sign desired state;
- :mod:`.controller` the rollout controller as a pure function; :mod:`.rollouts` its state in
  the store, :mod:`.rollout_views` what ``rollout status`` shows; :mod:`.stats` and
  :mod:`.experiments` A/B statistics and experiments;
- :mod:`.ingest` parse inbound MQTT; :mod:`.engine` ingest + controller loop + publishing
  (MQTT through :mod:`edgeserve.mqtt`, which also dispatches shared subscriptions);
- :mod:`.api` request validation; :mod:`.app` the Starlette app; :mod:`.server` wiring and
  ``serve()``; :mod:`.client` the operator API client; :mod:`.cli` ``edgeserve fleet``;
- :mod:`.broker_config` Mosquitto password file, ACL and configuration; :mod:`.embedded_broker`
  a broker for one machine; :mod:`.broker_status` the broker connection as the operator sees it;
- :mod:`.bootstrap` ``fleet init``; :mod:`.metrics` the Prometheus ``/metrics``.
"""
