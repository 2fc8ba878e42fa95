"""The fleet server: signed releases, desired state over MQTT, staged rollouts, A/B
experiments and a web console.

A release's way to a device, by folder and module (nothing is imported here, so
``edgeserve fleet --help`` stays fast):

1. **upload**: ``web/`` (the Starlette app: ``app`` route table, ``handlers``, ``auth``,
   ``errors``) receives the bundle; ``releases`` verifies its signatures and stores it in
   ``store/`` (every SQL statement, SQLite or PostgreSQL, behind one ``Store`` facade).
2. **rollout**: ``rollout/`` starts it (``start``), its ``controller`` decides phase by phase
   which devices get it and whether the gates hold, ``decisions`` persists that, and
   ``lifecycle`` is the rollout's status table.
3. **desired state over MQTT**: ``desired`` builds and signs each device's document;
   ``engine`` runs the controller loop and publishes through ``broker/`` (password file, ACL,
   an embedded broker for one machine, the connection ``status``).
4. **reports**: ``ingest`` parses what devices publish; ``rollout/reports`` folds their
   install states into the rollout; telemetry feeds the latency gate (``rollout/views``).
5. **rollback**: a failed gate or ``rollout/operator`` (pause, resume, abort, rollback)
   reverts the devices to their baselines; the next desired state says so.

Beside that path: ``experiments`` and ``stats`` (A/B tests between two versions), ``views``
(device and release pages), ``api`` (request validation), ``server`` (wiring and
``serve()``), ``client`` (the operator API client), ``cli/`` (``edgeserve fleet``),
``console/`` (the web console at ``/ui``), ``config`` (``fleet.toml``), ``bootstrap``
(``fleet init``) and ``metrics`` (Prometheus ``/metrics``).
"""
