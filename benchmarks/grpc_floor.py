"""How fast grpcio's Python server can answer ``ModelInfer`` at batch 1, beside the agent.

Minimal servers, each with the agent's decoding, encoding and an ONNX Runtime session of the
same model (one intra-op thread, no spinning), but no batcher, metrics or limits:

- ``hop``: ``grpc.aio`` on uvloop, the model on a worker thread (as the agent runs it);
- ``inline``: ``grpc.aio`` on uvloop, the model on the event loop;
- ``sync``: grpcio's sync server, the model in its handler thread.

They are measured with h2load (c=1, one connection) in alternated rounds with the agent's HTTP
binary and gRPC ``ModelInfer`` (``--no-batching``), through :mod:`native_latency`, so the
figures show what is left for the agent to cut and what is grpcio's own::

    .venv/bin/python benchmarks/grpc_floor.py [--rounds 3] [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

MODES = ("hop", "inline", "sync")
_SERVICE = "inference.GRPCInferenceService"


def serve(mode: str, port: int, onnx_path: str) -> None:
    """Serve ``ModelInfer`` and ``ServerLive`` on 127.0.0.1:``port`` until killed."""
    import grpc
    import onnxruntime as ort
    from edgeserve.agent.grpc import inference_pb2 as pb
    from edgeserve.agent.grpc.tensors import decode_infer_request, encode_infer_response

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, feeds)[0]

    def answer(y: np.ndarray) -> Any:
        return encode_infer_response("cnn", 1, [(output, y, True)], None)

    def handlers(infer: Any, live: Any) -> Any:
        return grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "ModelInfer": grpc.unary_unary_rpc_method_handler(
                    infer, pb.ModelInferRequest.FromString, pb.ModelInferResponse.SerializeToString
                ),
                "ServerLive": grpc.unary_unary_rpc_method_handler(
                    live, pb.ServerLiveRequest.FromString, pb.ServerLiveResponse.SerializeToString
                ),
            },
        )

    address = f"127.0.0.1:{port}"
    if mode == "sync":

        def infer_sync(request: Any, context: Any) -> Any:
            return answer(run(decode_infer_request(request).inputs))

        def live_sync(request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        server = grpc.server(ThreadPoolExecutor(4), handlers=[handlers(infer_sync, live_sync)])
        server.add_insecure_port(address)
        server.start()
        print("ready", flush=True)
        server.wait_for_termination()
        return

    import uvloop
    from grpc import aio

    worker = ThreadPoolExecutor(1)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def infer(request: Any, context: Any) -> Any:
            feeds = decode_infer_request(request).inputs
            if mode == "inline":
                return answer(run(feeds))
            return answer(await loop.run_in_executor(worker, run, feeds))

        async def live(request: Any, context: Any) -> Any:
            return pb.ServerLiveResponse(live=True)

        server = aio.server(handlers=[handlers(infer, live)])
        server.add_insecure_port(address)
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    sys.setswitchinterval(0.0005)  # as the agent sets it
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per target and round")
    parser.add_argument(
        "--serve", nargs=3, metavar=("MODE", "PORT", "ONNX"), help=argparse.SUPPRESS
    )
    opts = parser.parse_args()
    if opts.serve:
        serve(opts.serve[0], int(opts.serve[1]), opts.serve[2])
        return
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here.parent / "tests"))
    sys.path.insert(0, str(here))
    from edgeserve.agent.store import ModelStore
    from native_latency import H2LOAD_MISSING, alternate, grpc_targets, http_target, print_rounds
    from support.agent import start_agent
    from support.broker import free_port

    from agent import binary_header, build_bundle, grpc_payload

    if shutil.which("h2load") is None:
        sys.exit(H2LOAD_MISSING)
    work = Path(tempfile.mkdtemp(prefix="edgeserve-grpc-floor-"))
    servers: list[subprocess.Popen] = []
    agent = None
    try:
        bundle = build_bundle(work, "cnn")
        x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
        message = grpc_payload("cnn", x)
        state = work / "state"
        ModelStore(state).install(bundle)
        gport = free_port()
        agent = start_agent(state, extra_args=["--no-batching", "--grpc-port", str(gport)])
        (work / "agent").mkdir()
        targets = [
            replace(t, name=f"{t.name} [agent]")
            for t in [
                http_target(work / "agent", agent.port, "cnn", binary_header(x), x.tobytes()),
                grpc_targets(work / "agent", gport, "cnn", message)[0],
            ]
        ]
        for mode in MODES:
            port = free_port()
            server = subprocess.Popen(
                [sys.executable, __file__, "--serve", mode, str(port), str(work / "cnn.onnx")],
                stdout=subprocess.PIPE,
                text=True,
            )
            servers.append(server)
            if server.stdout is None or not server.stdout.readline().startswith("ready"):
                raise RuntimeError(f"minimal {mode} server did not start")
            (work / mode).mkdir()
            for target in grpc_targets(work / mode, port, "cnn", message):
                short = target.name.split(" (")[0]
                targets.append(replace(target, name=f"{short} [minimal {mode}]"))
        print_rounds(
            f"h2load c=1, model cnn, {os.cpu_count()} cores, {opts.rounds} alternated rounds of "
            f"{opts.seconds:g} s: median p50 (min-max) / median p99 ms",
            alternate(targets, opts.rounds, opts.seconds, work),
        )
    finally:
        if agent is not None:
            agent.stop()
        for server in servers:
            server.kill()
            server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
