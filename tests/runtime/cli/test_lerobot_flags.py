"""LeRobot's robot_client and policy_server flags on `up` and `serve` (issue 12, item 3)."""

import logging

import pytest
from typer.testing import CliRunner

from asyncinf.runtime.cli import app
from asyncinf.runtime.cli.lerobot_flags import PLOT_FILE, take_client_flags, take_server_flags
from asyncinf.runtime.errors import FlagError


def test_robot_client_flags_land_in_asyncinfs_places(caplog):
    top = {
        "server_address": "gpu:8080",
        "policy_type": "act",
        "pretrained_name_or_path": "lab/act",
        "policy_device": "cuda",
        "client_device": "cpu",
        "debug_visualize_queue_size": True,
        "fps": 30,
    }
    dotted = {"robot": {"type": "sim"}}
    with caplog.at_level(logging.INFO):
        own = take_client_flags(top, dotted)
    assert own == {"remote": "gpu:8080", "plot": PLOT_FILE}
    assert dotted["policy"] == {"type": "act", "path": "lab/act", "device": "cuda"}
    assert top == {"fps": 30}  # ours already: left for the plan
    assert "--client_device=cpu accepted and not needed: the client runs no model" in caplog.text


def test_a_lerobot_flag_and_ours_that_disagree_are_refused():
    with pytest.raises(FlagError, match=r"--policy_type=act and --policy.type=fake disagree"):
        take_client_flags({"policy_type": "act"}, {"policy": {"type": "fake"}})


def test_policy_server_flags_are_noted_not_dropped(caplog):
    top = {"inference_latency": 0.033, "obs_queue_timeout": 2, "fps": 30}
    with caplog.at_level(logging.INFO):
        take_server_flags(top)
    assert top == {"fps": 30}
    assert "--inference_latency=0.033 accepted and not needed" in caplog.text
    assert "--obs_queue_timeout=2 accepted and not needed" in caplog.text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["up", "--local", "--chunk_size_treshold=0.5"], "did you mean --chunk_size_threshold?"),
        (
            ["up", "--local", "--pretrained_name_or_pat=x"],
            "did you mean --pretrained_name_or_path?",
        ),
        (["serve", "--inference_latncy=0.03"], "did you mean --inference_latency?"),
        (["up", "--remote=h:1", "--server_address=h:2"], "disagree"),
        (["up"], "choose exactly one of --local or --remote"),
    ],
)
def test_a_bad_command_line_exits_2_naming_the_flag(args, expected):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
