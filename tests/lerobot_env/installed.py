"""The LeRobot these tests run against: 0.4.x on Python 3.11, 0.6.x on 3.12 (.ci/run runs both)."""

import importlib.metadata

from packaging.version import Version

VERSION = importlib.metadata.version("lerobot")
# From 0.5 on, LeRobot writes `pretrained_revision` into every config.json (0.4.x refuses it).
WRITES_PRETRAINED_REVISION = Version(VERSION) >= Version("0.5")
