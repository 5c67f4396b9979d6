"""The committed generated code matches the .proto, and the schema is the documented one."""

import re
from pathlib import Path

import grpc_tools  # noqa: F401  (the extra under test must be installed)

from asyncinf.transports.grpc import asyncinf_pb2 as pb
from asyncinf.transports.grpc import gen

# Tool versions stamped into generated code; they differ between developers' grpcio-tools
# without the code being stale.
_VERSION_LINES = [
    re.compile(r"^# Protobuf Python Version: .*$", re.M),
    re.compile(r"ValidateProtobufRuntimeVersion\([^)]*\)", re.S),
    re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.M),
]


def _normalized(text: str) -> str:
    for pattern in _VERSION_LINES:
        text = pattern.sub("<version>", text)
    return text


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    for fresh in gen.generate(tmp_path):
        committed = gen.HERE / fresh.name
        assert committed.exists(), f"{committed.name} is missing: run {gen.__name__}"
        assert _normalized(committed.read_text()) == _normalized(fresh.read_text()), (
            f"{committed.name} is stale: run `python -m asyncinf.transports.grpc.gen`"
        )


def test_generated_import_is_package_qualified() -> None:
    text = (gen.HERE / "asyncinf_pb2_grpc.py").read_text()
    assert "from asyncinf.transports.grpc import asyncinf_pb2" in text


def test_schema_package_and_one_bidi_stream() -> None:
    assert pb.DESCRIPTOR.package == "asyncinf.v1"
    service = pb.DESCRIPTOR.services_by_name["AsyncInference"]
    session = service.methods_by_name["Session"]
    assert session.input_type.name == "Up" and session.output_type.name == "Down"
    up = {f.name for f in pb.Up.DESCRIPTOR.oneofs_by_name["msg"].fields}
    down = {f.name for f in pb.Down.DESCRIPTOR.oneofs_by_name["msg"].fields}
    assert up == {"handshake", "observation", "heartbeat", "goodbye"}
    assert down == {"reply", "chunk", "error", "heartbeat", "goodbye"}
