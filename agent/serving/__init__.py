"""Serving: what answers an inference request once a front end has decoded it.

An HTTP route (:mod:`edgeserve.agent.http`) or a gRPC call (:mod:`edgeserve.agent.grpc`)
hands a request to :class:`~.core.Agent` (``core``), whose routing table (``routing``) picks
the version to run (labels, the on-device A/B split of ``policy``); the request is submitted to
that version's
:class:`~.loaded.LoadedModel` (``loaded``): a runtime from :mod:`edgeserve.runtimes` behind a
dynamic :class:`~.batcher.Batcher` (``batcher``). ``metrics`` counts requests and latencies
for Prometheus, ``telemetry`` buffers per-version windows on disk for fleet sync to upload.
``classification`` turns scores into top-k labels, ``views`` and ``tritonconfig`` describe
models for the metadata endpoints, and ``health`` compares a newly activated version's outputs
with the references its bundle carries (the check fleet sync rolls back on).

Releases arrive through :mod:`edgeserve.agent.sync`, which installs into the
:class:`~edgeserve.agent.store.ModelStore` and activates through :class:`~.core.Agent`.
"""
