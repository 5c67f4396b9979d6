"""The test kit users get with the package: its clock and its wait behave as documented."""

import pytest

from asyncinf.runtime.messages import SCHEMA_VERSION
from asyncinf.runtime.testing import ManualClock, hello, started, wait_until


def test_manual_clock_moves_only_when_told():
    clock = ManualClock(start_ns=5_000_000_000)
    assert clock() == 5_000_000_000 and clock.monotonic() == 5.0
    clock.advance(0.25)
    clock.sleep(0.5, late_ns=1_000)
    assert clock() == 5_750_001_000 and clock.sleeps == [0.5]


def test_wait_until_names_what_it_waited_for():
    wait_until(lambda: True, timeout_s=0)
    with pytest.raises(AssertionError, match=r"after 0.05 s waiting for the moon"):
        wait_until(lambda: False, timeout_s=0.05, what="the moon")


def test_hello_defaults_and_overrides():
    h = hello({"front": (24, 32, 3)}, fps=10.0, task="stack")
    assert h.joint_names == ["a.pos", "b.pos"] and h.cameras == {"front": (24, 32, 3)}
    assert h.policy.type == "fake" and h.policy.actions_per_chunk == 4
    assert (h.fps, h.task, h.schema_version) == (10.0, "stack", SCHEMA_VERSION)


def test_started_ends_everything_it_made_once_the_test_is_done():
    ended = []
    body = started(lambda *args, **kw: (args, kw), ended.append)
    start = next(body)
    assert start(1, b=2) == ((1,), {"b": 2})
    start(3)
    assert not ended
    with pytest.raises(StopIteration):
        next(body)  # the teardown, as pytest runs it
    assert ended == [((1,), {"b": 2}), ((3,), {})]
