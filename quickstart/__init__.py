"""`edgeserve quickstart`: the whole loop on one machine, built from the real components.

Modules, in the order a run goes:

- ``cli``: the command and its flags;
- ``model``: trains the small digits classifier the run converts and releases;
- ``procs``: runs ``edgeserve`` commands and long-running services, with their logs;
- ``services``: starts keys, the MQTT broker, the fleet server and the agents;
- ``scenario``: :class:`~edgeserve.quickstart.scenario.Quickstart`, the steps (train,
  convert, start, release, roll out, A/B experiment, predict);
- ``checks``: what each step verifies, over the fleet server's and the agents' APIs;
- ``http``: the small HTTP client those checks use;
- ``cli_reference``: renders the README's CLI reference from the commands' help.
"""
