"""What the supervisor hands its children: specs and the pipe vocabulary, round-tripped."""

import json

import pytest
from typer.testing import CliRunner

from asyncinf.runtime.cli import app
from asyncinf.runtime.client import ClientConfig
from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.messages import PolicySpec, RtcSettings
from asyncinf.runtime.server import LoadedPolicy, ServerConfig
from asyncinf.runtime.supervise import protocol
from asyncinf.runtime.supervise.plan import build_plan, build_server_spec
from asyncinf.runtime.supervise.protocol import Command, Role
from asyncinf.runtime.supervise.specs import ClientSpec, RobotSpec, ServerSpec
from asyncinf.runtime.testing import hello, run_summary
from asyncinf.transports.factory import TransportSpec

GRPC = TransportSpec("grpc", {"target": "gpu-host:8080", "image_codec": "jpeg"})


def test_a_client_spec_survives_its_json_round_trip():
    spec = ClientSpec(
        RobotSpec("so101_follower", {"port": "/dev/ttyACM0", "id": "left"}),
        ClientConfig(fps=15.0, actions_per_chunk=20, chunk_size_threshold=0.7, task="stack"),
        PolicySpec("smolvla", "/ckpt", "cuda:0", 20, {"n": 1}, RtcSettings(8, 5.0, "EXP")),
        GRPC,
        metrics_path="/tmp/m.jsonl",
    )
    assert ClientSpec.from_json(spec.to_json()) == spec


RTC = PolicySpec("scripted", rtc=RtcSettings(execution_horizon=12))


@pytest.mark.parametrize(
    "preload", [None, hello({"front": (480, 640, 3)}, task="stack"), hello(policy=RTC)]
)
def test_a_server_spec_survives_its_json_round_trip(preload):
    spec = ServerSpec(
        ServerConfig(similarity_atol=0.5), preload, TransportSpec("shm", {"name": "x"})
    )
    assert ServerSpec.from_json(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("rtc", "settings"),
    [
        (None, None),
        (False, None),
        (True, RtcSettings()),
        ({"execution_horizon": 7}, RtcSettings(7)),
    ],
)
def test_the_plan_gives_client_and_preload_the_same_rtc(rtc, settings):
    plan = build_plan({"robot": {"type": "sim"}, **({} if rtc is None else {"rtc": rtc})})
    assert plan.client.policy.rtc == settings
    assert plan.server.preload.policy.rtc == settings  # so the preloaded policy is the one used


def test_a_child_rebuilds_and_rechecks_the_configs():
    text = json.loads(ServerSpec(ServerConfig(), None).to_json())
    text["server"]["similarity_atol"] = -1
    with pytest.raises(ConfigError, match="similarity_atol"):
        ServerSpec.from_json(json.dumps(text))


def test_the_plan_builds_typed_specs_and_leaves_the_transport_to_the_supervisor():
    plan = build_plan({"fps": 20, "robot": {"type": "sim"}, "similarity_atol": 0.1})
    assert plan.client.client.fps == 20 and plan.client.transport is None
    assert plan.server.server.similarity_atol == 0.1
    assert plan.server.preload.fps == 20 and plan.server.preload.robot_type == "sim"
    remote = build_plan({}, remote=GRPC)
    assert remote.server is None and remote.remote == GRPC


def test_serve_and_up_share_the_server_options_and_the_refusals():
    spec = build_server_spec({"similarity_atol": 0.5, "robot": {}, "policy": {}})
    assert spec.server.similarity_atol == 0.5 and spec.preload is None
    with pytest.raises(ConfigError, match="--colour is not an option"):
        build_server_spec({"colour": "red"})
    runner = CliRunner()
    # An unknown flag is a bad command line (2, issue 12); a bad value a bad configuration (78).
    for args, code, expected in (
        (["serve", "--colour=red"], 2, "--colour is not an option"),
        (["serve", "--similarity_atl=1"], 2, "did you mean --similarity_atol?"),
        (["serve", "--similarity_atol=-1"], 78, "--similarity_atol=-1"),
        (["serve", "--policy.type=fake"], 78, "without --robot.type"),
        (["serve", "--camera.x=1"], 2, "--camera.* options are not known to serve"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert expected in result.output


def test_commands_and_events_round_trip_and_bad_lines_are_refused():
    for cmd, transport, timeout_s in (
        (Command.STOP, None, None),
        (Command.DETACH, None, None),
        (Command.ATTACH, GRPC, 4.5),
    ):
        line = protocol.encode_command(cmd, transport, timeout_s).decode()
        assert protocol.decode_command(line) == (cmd, transport, timeout_s)
    events = [
        (Role.CLIENT, protocol.ClientReady(50, ["a.pos"], {"front": [224, 224, 3]})),
        (Role.SERVER, protocol.ServerReady({"act /ckpt cpu": LoadedPolicy(50)})),
        (Role.CLIENT, protocol.ClientBeat(1, 2, 3, 4, 5, 6, False, None, 2.5, "server lost", 3.0)),
        (Role.SERVER, protocol.ServerBeat(chunks=7)),
        (Role.SERVER, protocol.Failed(3, "policy load failed")),
        (Role.CLIENT, protocol.Holding([0.5, 1.0], ["a.pos", "b.pos"])),
        (Role.CLIENT, protocol.Summary(run_summary(ticks=10))),
    ]
    for role, event in events:
        assert protocol.decode_event(role, protocol.encode_event(event, pid=42)) == event
    for line in (b"[]", b'{"event": "holding", "target": null}', b'{"event": "nope"}'):
        with pytest.raises(ValueError):
            protocol.decode_event(Role.CLIENT, line)
    with pytest.raises(ValueError, match="server sends no 'holding'"):
        protocol.decode_event(Role.SERVER, protocol.encode_event(events[5][1], pid=1))


def test_the_log_level_travels_on_the_worker_command_line():
    argv = protocol.worker_argv(Role.SERVER, "{}", 7, "DEBUG")
    assert argv[1:3] == ["-m", protocol.WORKER_MODULE]
    assert argv[-2:] == ["--log-level", "DEBUG"]


def test_serve_preloads_the_rtc_variant_that_rtc_clients_ask_for():
    options = {
        "rtc": {"execution_horizon": 25},
        "robot": {"type": "sim"},
        "policy": {"type": "scripted"},
    }
    spec = build_server_spec(options)
    assert spec.preload.policy.rtc == RtcSettings(execution_horizon=25)
    client = build_plan(options).client
    assert client.policy == spec.preload.policy  # the same built_for: no second copy
