"""The agent's gRPC API: OIP v2 ``inference.GRPCInferenceService`` with Triton's extensions.

``edgeserve agent run --grpc-port N`` (or ``[server] grpc_port``) serves it beside REST, through
the same model resolution, batcher, A/B split, metrics and bearer token. Importing this package
imports nothing heavy; :mod:`.server` imports protobuf and hpack (the ``grpc`` extra), and only
when a gRPC port is configured, so an agent without gRPC does not pay for it in memory.

- :mod:`.server`: :class:`~.server.GrpcServer`, the server, its limits and the token check;
- :mod:`.conn`: one connection's gRPC calls, over :mod:`.frames` (HTTP/2 framing) and
  :mod:`.h2` (frame and header-block encoding); :mod:`.stream`: one call;
- :mod:`.status`: the status codes;
- :mod:`.service`: the RPC handlers;
- :mod:`.tensors`: ``ModelInferRequest``/``ModelInferResponse`` <-> arrays;
- ``inference.proto`` and the modules generated from it by ``scripts/gen-grpc``.
"""

from __future__ import annotations

__all__: list[str] = []
