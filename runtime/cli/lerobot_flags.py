"""LeRobot's async-inference flags, taken as they are, so a LeRobot user's command line runs.

`python -m lerobot.async_inference.robot_client` → `asyncinf up`: `--server_address=HOST:PORT`
is `--remote`; `--policy_type`, `--pretrained_name_or_path` and `--policy_device` are
`--policy.type`, `--policy.path` and `--policy.device`; `--debug_visualize_queue_size` draws
the queue plot (`--plot`). `--fps`, `--actions_per_chunk`, `--chunk_size_threshold`,
`--aggregate_fn_name` and `--task` are asyncinf's own names already.
`python -m lerobot.async_inference.policy_server` → `asyncinf serve`: `--host`, `--port` and
`--fps` are ours. Flags asyncinf has no use for are accepted with a one-line note saying why,
never dropped silently.
"""

from __future__ import annotations

import logging
from typing import Any

from asyncinf.runtime.errors import FlagError

log = logging.getLogger(__name__)

_POLICY_FLAGS = {
    "policy_type": "type",
    "pretrained_name_or_path": "path",
    "policy_device": "device",
}
CLIENT_UNUSED = {
    "client_device": "the client runs no model (the policy runs in the server)",
}
SERVER_UNUSED = {
    "inference_latency": "the server answers as soon as the policy has (no emulated latency)",
    "obs_queue_timeout": "the server always takes the newest observation (no queue to wait on)",
}
PLOT_FILE = "queue_size.png"
# Every robot_client / policy_server name taken here: a misspelling of one is suggested too.
CLIENT_FLAGS = {*_POLICY_FLAGS, *CLIENT_UNUSED, "server_address", "debug_visualize_queue_size"}
SERVER_FLAGS = set(SERVER_UNUSED)


def take_client_flags(top: dict[str, Any], dotted: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Move robot_client's flags out of `top` (the group-less flags) into asyncinf's places.

    Returns what goes to `up` itself: `remote` and `plot`, when given that way.
    """
    for flag, field in _POLICY_FLAGS.items():
        if flag in top:
            _put(dotted.setdefault("policy", {}), field, top.pop(flag), flag)
    _note_unused(top, CLIENT_UNUSED)
    own: dict[str, Any] = {}
    if "server_address" in top:
        own["remote"] = str(top.pop("server_address"))
    if top.pop("debug_visualize_queue_size", False):
        own["plot"] = PLOT_FILE
    return own


def take_server_flags(top: dict[str, Any]) -> None:
    """Note, and drop, policy_server's flags that asyncinf has no use for."""
    _note_unused(top, SERVER_UNUSED)


def _put(group: dict[str, Any], field: str, value: Any, flag: str) -> None:
    if field in group and group[field] != value:
        raise FlagError(f"--{flag}={value} and --policy.{field}={group[field]} disagree: give one")
    group[field] = value


def _note_unused(top: dict[str, Any], unused: dict[str, str]) -> None:
    for flag, why in unused.items():
        if flag in top:
            log.info("--%s=%s accepted and not needed: %s", flag, top.pop(flag), why)
