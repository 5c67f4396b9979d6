"""From `--robot.*` options to the nested map LeRobot's config decoder takes (no LeRobot)."""

import pytest

from asyncinf.robots.lerobot.options import nest
from asyncinf.runtime.errors import ConfigError


def test_dotted_keys_nest_and_text_maps_are_parsed():
    assert nest({
        "left_arm_config.port": "/dev/ttyACM0",
        "cameras": "{cam_high: {type: intelrealsense, serial_number_or_name: '0123', fps: 30}}",
        "left_arm_ip_address": "192.168.1.5",
        "max_relative_target": "0.5",
    }) == {
        "left_arm_config": {"port": "/dev/ttyACM0"},
        "cameras": {"cam_high": {"type": "intelrealsense", "serial_number_or_name": "0123",
                                 "fps": 30}},
        "left_arm_ip_address": "192.168.1.5",  # scalars stay text: draccus types them
        "max_relative_target": "0.5",
    }  # fmt: skip


def test_a_dotted_key_refines_a_map_given_whole():
    assert nest({"arm.port": "/dev/a", "arm": "{port: /dev/b, id: x}"}) == {
        "arm": {"port": "/dev/a", "id": "x"}
    }


def test_a_value_and_a_group_of_the_same_name_is_an_error():
    with pytest.raises(ConfigError, match=r"arm\.port: arm is given both"):
        nest({"arm": "/dev/a", "arm.port": "/dev/b"})
