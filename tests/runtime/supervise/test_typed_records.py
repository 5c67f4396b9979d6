"""What crosses between the supervisor and its children has a declared shape (issue 10):
each record survives the real pipe encoding, and a malformed one is refused by name."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from asyncinf.robots.robot import make_robot
from asyncinf.runtime import records
from asyncinf.runtime.client import ClientConfig, ClientStats
from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.holds import NO_CHUNK, HeldTime, HoldTracker
from asyncinf.runtime.messages import PolicySpec
from asyncinf.runtime.server import LoadedPolicy, PolicyCache, ServerConfig
from asyncinf.runtime.supervise import protocol, robot_shape
from asyncinf.runtime.supervise.exitcodes import ExitCode
from asyncinf.runtime.supervise.protocol import Command, Role
from asyncinf.runtime.supervise.robot_shape import RobotShape
from asyncinf.runtime.supervise.specs import ClientSpec, RobotSpec, ServerSpec
from asyncinf.runtime.supervise.status_file import (
    RunStatus,
    ServerStatus,
    State,
    StatusFileError,
    read_status_file,
    write_status_file,
)
from asyncinf.runtime.testing import hello
from asyncinf.transports.counters import GrpcClientCounters, NoCounters, ShmClientCounters
from asyncinf.transports.factory import LocalSessions, ShmOptions, TransportSpec, open_client
from asyncinf.transports.grpc import GrpcClientConfig, GrpcServerConfig
from asyncinf.transports.shm import WhenFull

LOADED = {"act /ckpt cpu": LoadedPolicy(50, {"lerobot": "0.4.4", "torch": "2.5.1"})}


def round_trip(role: Role, event: protocol.Event) -> tuple[protocol.Event, dict]:
    line = protocol.encode_event(event, pid=42)
    return protocol.decode_event(role, line), json.loads(line)


def refused(role: Role, body: dict, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        protocol.decode_event(role, json.dumps(body).encode())


# --- ServerReady: the loaded policies ---------------------------------------------------


def test_the_loaded_policies_travel_flat_and_come_back_typed():
    event = protocol.ServerReady(LOADED)
    back, body = round_trip(Role.SERVER, event)
    assert back == event
    assert body["policy"] == {"act /ckpt cpu": {"chunk": 50, "lerobot": "0.4.4", "torch": "2.5.1"}}


def test_what_a_real_policy_cache_holds_round_trips():
    cache = PolicyCache()
    cache.get(hello())
    info = cache.info()
    assert info == {"fake  cpu": LoadedPolicy(4)}
    assert round_trip(Role.SERVER, protocol.ServerReady(info))[0].policy == info


@pytest.mark.parametrize(
    ("policy", "says"),
    [
        ({"chunk": "50"}, "ServerReady.policy.act: LoadedPolicy.chunk='50': expected an integer"),
        ({"lerobot": "0.4.4"}, "LoadedPolicy.chunk=None: expected an integer"),
        ({"chunk": 50, "torch": 2.5}, "LoadedPolicy.versions.torch=2.5: expected str"),
        ([50], "LoadedPolicy=[50]: expected a map"),
    ],
)
def test_a_malformed_policy_entry_is_refused_by_name(policy, says):
    refused(Role.SERVER, {"event": "ready", "pid": 1, "policy": {"act": policy}}, says)


# --- Summary: the client's end-of-run summary -------------------------------------------


def counted_stats() -> ClientStats:
    stats = ClientStats(ticks=90, actions_executed=80, idle_frames=10, chunks_received=4)
    for ns in (2_000_000, 3_000_000, 40_000_000):
        stats.roundtrip_ns.record(ns)
        stats.period_error_ns.record(ns // 100)
    stats.seam_jump.record(0.75)
    stats.delay.record(3, 3, 3, steady=True)
    return stats


def held() -> HeldTime:
    holds = HoldTracker(33_000_000)
    for t, reason in enumerate([None, NO_CHUNK, NO_CHUNK, None]):
        holds.tick((t + 1) * 33_000_000, reason)
    return holds.summary()


def real_counters(kind: str):
    """What a real client end of `kind` counts (none attached: `NoCounters`)."""
    if kind == "none":
        return NoCounters()
    if kind == "grpc":
        end = open_client(TransportSpec("grpc", {"target": "127.0.0.1:1", "reconnect": False}))
        try:
            return end.stats()
        finally:
            end.close()
    sessions = LocalSessions()
    try:
        end = open_client(sessions.create())
        try:
            return end.stats()
        finally:
            end.close()
    finally:
        sessions.unlink()


@pytest.mark.parametrize("kind", ["shm", "grpc", "none"])
def test_a_summary_round_trips_with_each_kind_of_transport_counters(kind):
    counters = real_counters(kind)
    assert isinstance(counters, {"shm": ShmClientCounters, "grpc": GrpcClientCounters,
                                 "none": NoCounters}[kind])  # fmt: skip
    summary = counted_stats().summary(30.0, 10, counters, held())
    back, body = round_trip(Role.CLIENT, protocol.Summary(summary))
    assert back == protocol.Summary(summary)
    assert type(back.summary.transport) is type(counters)
    assert back.summary.roundtrip_ms.max == pytest.approx(40.0, rel=0.01)
    assert back.summary.held.reasons_s == {NO_CHUNK: 0.066}
    # The document is the map `--summary-json` always wrote: same keys, in the same order.
    assert list(body["summary"]) == DOCUMENTED_KEYS
    assert body["summary"]["roundtrip_ms"] == dataclasses.asdict(summary.roundtrip_ms)
    assert body["summary"]["transport"] == dataclasses.asdict(counters)
    assert body["summary"]["held"] == {"total_s": 0.066, "fraction": 0.6667,
                                       "reasons_s": {NO_CHUNK: 0.066}}  # fmt: skip
    assert body["summary"]["seam_jump"]["max"] == pytest.approx(0.75, rel=0.01)
    assert json.dumps(summary.to_json()) == json.dumps(body["summary"])


# `--summary-json` schema 1, as users' scripts read it.
DOCUMENTED_KEYS = [
    "schema", "fps", "actions_per_chunk", "ticks", "actions_executed", "idle_frames",
    "idle_frames_after_first_chunk", "chunks_received", "errors", "rejected_chunks",
    "observations_sent", "server_lost", "sessions_corrupted", "overruns", "period_error_ms",
    "roundtrip_ms", "server_queue_wait_ms", "server_compute_ms", "server_preprocess_ms",
    "server_inference_ms", "server_postprocess_ms", "overhead_ms", "seam_jump", "command_step",
    "inference_delay", "transport", "held",
]  # fmt: skip


def summary_body() -> dict:
    summary = counted_stats().summary(30.0, 10, NoCounters(), held())
    return json.loads(protocol.encode_event(protocol.Summary(summary), pid=1))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda s: s.pop("ticks"), "Summary.summary: RunSummary.ticks: missing"),
        (lambda s: s.update(colour=1), "RunSummary.colour: not a field of RunSummary"),
        (lambda s: s["held"].update(total_s="long"), "RunSummary.held.total_s='long': expected"),
        (lambda s: s["roundtrip_ms"].pop("p99"), "RunSummary.roundtrip_ms.p99: missing"),
        (lambda s: s["inference_delay"].update(exact=None), "inference_delay.exact=None"),
        (
            lambda s: s.update(transport={"bytes": 3}),
            "RunSummary.transport={'bytes': 3}: none of NoCounters or",
        ),
        (lambda s: s.update(schema=2), "schema=2: this asyncinf reads schema 1"),
        (lambda s: s.update(idle_frames=False), "RunSummary.idle_frames=False: expected"),
    ],
)
def test_a_malformed_summary_is_refused_by_name(change, says):
    body = summary_body()
    change(body["summary"])
    refused(Role.CLIENT, body, says)


# --- TransportSpec: commands and the children's specs -----------------------------------

SPECS = [
    TransportSpec("shm", ShmOptions("asyncinf-1-0")),
    TransportSpec("shm", ShmOptions(names=("asyncinf-1-0", "asyncinf-1-1"), labels=("l", "r"))),
    TransportSpec("grpc", GrpcClientConfig(target="gpu-host:8080", reconnect_give_up_s=3.0)),
    TransportSpec("grpc", GrpcServerConfig(port=0, when_full=WhenFull.ERROR, max_sessions=2)),
]


@pytest.mark.parametrize("spec", SPECS, ids=["shm", "shm-lanes", "grpc-client", "grpc-server"])
def test_a_transport_spec_round_trips_in_an_attach_command_and_a_childs_spec(spec):
    line = protocol.encode_command(Command.ATTACH, spec, 2.5).decode()
    assert protocol.decode_command(line) == (Command.ATTACH, spec, 2.5)
    assert type(protocol.decode_command(line)[1].options) is type(spec.options)
    client = ClientSpec(RobotSpec("sim"), ClientConfig(), PolicySpec(), spec)
    assert ClientSpec.from_json(client.to_json()) == client
    server = ServerSpec(ServerConfig(), hello(), spec)
    assert ServerSpec.from_json(server.to_json()) == server


@pytest.mark.parametrize(
    ("transport", "says"),
    [
        ({"kind": "shm", "name": "x", "colour": 1}, "ShmOptions.colour: not a field of"),
        ({"kind": "shm", "names": "x"}, "ShmOptions.names='x': expected a list"),
        ({"kind": "shm"}, "give a session name or names"),
        ({"kind": "grpc", "target": "h:1", "colour": 1}, "--grpc.colour is not an option of"),
        ({"kind": "grpc", "port": 0, "target_port": 1}, "--grpc.target_port is not an option"),
        ({"kind": "ftp", "name": "x"}, "transport kind 'ftp' is not known"),
        (["shm"], "expected a map with a kind"),
    ],
)
def test_a_malformed_transport_spec_is_refused_by_name(transport, says):
    line = json.dumps({"cmd": "attach", "transport": transport})
    with pytest.raises(ConfigError, match=re.escape(says)):
        protocol.decode_command(line)


def test_an_end_is_opened_only_from_its_own_options():
    with pytest.raises(ConfigError, match="grpc transport's client end takes GrpcClientConfig"):
        open_client(SPECS[3])


def unknown_transport_option(spec: dict) -> None:
    spec["transport"] = {"kind": "shm", "name": "asyncinf-1-0", "colour": "red"}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (unknown_transport_option, "ShmOptions.colour: not a field of ShmOptions"),
        (lambda spec: spec.pop("robot"), "ClientSpec.robot: missing"),
        (lambda spec: spec["client"].update(fps="fast"), "ClientSpec.client.fps='fast'"),
    ],
)
def test_a_child_given_a_malformed_spec_says_what_is_wrong_and_exits_78(change, says):
    spec = json.loads(ClientSpec(RobotSpec("sim"), ClientConfig(), PolicySpec()).to_json())
    change(spec)
    read_fd, write_fd = os.pipe()
    argv = protocol.worker_argv(Role.CLIENT, json.dumps(spec), write_fd, "ERROR")
    try:
        done = subprocess.run(
            argv, pass_fds=(write_fd,), stdin=subprocess.DEVNULL, capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd, "rb") as events:
        lines = events.read().splitlines()
    assert done.returncode == ExitCode.CONFIG_ERROR, done.stderr
    failed = protocol.decode_event(Role.CLIENT, lines[-1])
    assert isinstance(failed, protocol.Failed) and says in failed.message
    assert "Traceback" not in done.stderr


# --- the status file ------------------------------------------------------------------------


def test_the_status_file_keeps_its_flat_policy_map_and_refuses_a_bad_one(tmp_path):
    path = tmp_path / "status.json"
    server = ServerStatus(os.getpid(), State.RUNNING, 0, LOADED, {"1": 3})
    status = RunStatus(State.RUNNING, server=server)
    write_status_file(path, status)
    data = json.loads(path.read_text())
    assert data["server"]["policy"] == {"act /ckpt cpu": {"chunk": 50, "lerobot": "0.4.4",
                                                          "torch": "2.5.1"}}  # fmt: skip
    assert read_status_file(path) == status
    data["server"]["policy"]["act /ckpt cpu"]["chunk"] = "fifty"
    path.write_text(json.dumps(data))
    with pytest.raises(StatusFileError, match=re.escape("LoadedPolicy.chunk='fifty'")):
        read_status_file(path)


# --- the robot description child ------------------------------------------------------------


def test_the_robot_description_child_prints_a_robot_shape():

    options = {"cameras": {"front": {"type": "sim", "width": 64, "height": 48}}}
    argv = [sys.executable, "-m", robot_shape.__name__, "sim", json.dumps(options)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    shape = records.from_json(RobotShape, json.loads(done.stdout))
    built = make_robot("sim", options)
    assert shape == RobotShape(list(built.joint_names), {"front": (48, 64, 3)})
    with pytest.raises(ValueError, match=re.escape("RobotShape.cameras.front=[48, 64]")):
        records.from_json(RobotShape, {"joints": [], "cameras": {"front": [48, 64]}})
