"""Our ``inference.proto`` declares the protocol exactly as tritonclient's stubs do, and the
checked-in Python modules are what ``scripts/gen-grpc`` generates from it.

Our .proto is compiled to a descriptor set with grpcio-tools (never imported here: its symbols
would clash with tritonclient's in protobuf's default pool), then every message, field, enum
value and service method in it is compared with the descriptors tritonclient.grpc ships.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from tritonclient.grpc import model_config_pb2, service_pb2

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "agent" / "grpc" / "inference.proto"
GENERATED = ("inference_pb2.py", "inference_pb2.pyi")


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path_factory.mktemp("proto") / "set.pb"
    from grpc_tools import protoc

    code = protoc.main(["protoc", f"-I{PROTO.parent}", f"--descriptor_set_out={out}", str(PROTO)])
    assert code == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    assert len(files) == 1
    return files[0]


def _upstream() -> dict[str, Any]:
    """Full name -> descriptor of every message and enum tritonclient knows (nested too)."""
    found: dict[str, Any] = {}

    def walk(desc: Any) -> None:
        found[desc.full_name] = desc
        for nested in getattr(desc, "nested_types", ()):
            walk(nested)
        for enum in getattr(desc, "enum_types", ()):
            found[enum.full_name] = enum

    for module in (service_pb2, model_config_pb2):
        for message in module.DESCRIPTOR.message_types_by_name.values():
            walk(message)
        for enum in module.DESCRIPTOR.enum_types_by_name.values():
            found[enum.full_name] = enum
    return found


def _messages(prefix: str, messages: Any) -> list[tuple[str, descriptor_pb2.DescriptorProto]]:
    out = []
    for message in messages:
        name = f"{prefix}.{message.name}"
        out.append((name, message))
        out.extend(_messages(name, message.nested_type))
    return out


def test_agent_grpc_proto_package_and_service(ours: descriptor_pb2.FileDescriptorProto) -> None:
    assert ours.package == "inference"
    [service] = ours.service
    upstream = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.name == upstream.name
    assert len(service.method) >= 12
    for method in service.method:
        theirs = upstream.methods_by_name[method.name]
        assert method.input_type == f".{theirs.input_type.full_name}", method.name
        assert method.output_type == f".{theirs.output_type.full_name}", method.name
        assert method.client_streaming == theirs.client_streaming, method.name
        assert method.server_streaming == theirs.server_streaming, method.name


def test_agent_grpc_proto_fields_match_tritonclient(
    ours: descriptor_pb2.FileDescriptorProto,
) -> None:
    upstream = _upstream()
    messages = _messages("inference", ours.message_type)
    assert len(messages) > 40
    for full_name, message in messages:
        assert full_name in upstream, f"{full_name} is not in the protocol"
        theirs = upstream[full_name]
        assert message.options.map_entry == theirs.GetOptions().map_entry, full_name
        for field in message.field:
            assert field.name in theirs.fields_by_name, f"{full_name}.{field.name} unknown"
            other = theirs.fields_by_name[field.name]
            where = f"{full_name}.{field.name}"
            assert field.number == other.number, where
            assert field.type == other.type, where
            assert (field.label == field.LABEL_REPEATED) == other.is_repeated, where
            if field.type_name:
                target = other.message_type or other.enum_type
                assert field.type_name == f".{target.full_name}", where
            oneof = (
                message.oneof_decl[field.oneof_index].name
                if field.HasField("oneof_index")
                else None
            )
            theirs_oneof = other.containing_oneof.name if other.containing_oneof else None
            assert oneof == theirs_oneof, where
        for enum in message.enum_type:
            _check_enum(f"{full_name}.{enum.name}", enum, upstream)
    for enum in ours.enum_type:
        _check_enum(f"inference.{enum.name}", enum, upstream)


def _check_enum(full_name: str, enum: Any, upstream: dict[str, Any]) -> None:
    theirs = upstream[full_name]
    assert {v.name: v.number for v in enum.value} == {v.name: v.number for v in theirs.values}, (
        full_name
    )


def test_agent_grpc_generated_modules_are_current(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen-grpc"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    for name in GENERATED:
        fresh = (tmp_path / name).read_text()
        checked_in = (ROOT / "agent" / "grpc" / name).read_text()
        assert fresh == checked_in, f"agent/grpc/{name} is stale: run scripts/gen-grpc"
