import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncinf.runtime.action_queue import ActionQueue
from asyncinf.runtime.aggregate import AGGREGATES, get_aggregate, register_aggregate
from asyncinf.runtime.errors import ConfigError


def chunk(values, joints=2):
    return np.repeat(np.asarray(values, np.float32)[:, None], joints, axis=1)


def drain(q):
    out = []
    while (a := q.pop()) is not None:
        out.append(float(a[0]))
    return out


def test_first_action_of_a_chunk_is_executed():
    q = ActionQueue(2, get_aggregate("weighted_average"))
    q.merge(0, chunk([10, 11, 12]))
    assert drain(q) == [10, 11, 12]
    assert q.next_timestep == 3


def test_stale_actions_are_dropped_overlap_blended_rest_appended():
    q = ActionQueue(2, get_aggregate("weighted_average"))
    q.merge(0, chunk([0, 0, 0, 0]))
    q.pop()
    q.pop()  # timesteps 0 and 1 executed; 2 and 3 queued
    q.merge(1, chunk([100, 100, 100, 100]))  # covers 1..4
    assert q.stale_dropped == 1
    assert drain(q) == pytest.approx([70, 70, 100])  # 0.3*0 + 0.7*100 on 2, 3; 4 appended


def test_chunk_entirely_in_the_past_changes_nothing():
    q = ActionQueue(2, get_aggregate("latest_only"))
    q.merge(0, chunk([1, 2, 3]))
    drain(q)
    q.merge(0, chunk([9, 9]))
    assert len(q) == 0 and q.stale_dropped == 2


@pytest.mark.parametrize(
    ("name", "expected"),
    [("weighted_average", 7.0), ("latest_only", 10.0), ("average", 5.0), ("conservative", 3.0)],
)
def test_builtin_aggregates(name, expected):
    q = ActionQueue(1, get_aggregate(name))
    q.merge(0, chunk([0], joints=1))
    q.merge(0, chunk([10], joints=1))
    assert q.pop()[0] == pytest.approx(expected)


def test_custom_aggregate_by_name_and_by_import_path():
    register_aggregate("max", np.maximum)
    try:
        q = ActionQueue(1, get_aggregate("max"))
        q.merge(0, chunk([5], joints=1))
        q.merge(0, chunk([3], joints=1))
        assert q.pop()[0] == 5
        assert get_aggregate("numpy:minimum") is np.minimum
    finally:
        del AGGREGATES["max"]


def test_unknown_aggregate_names_the_choices():
    with pytest.raises(ConfigError, match="weighted_average"):
        get_aggregate("nope")


@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.integers(1, 20), st.integers(0, 5)),
        min_size=1,
        max_size=30,
    )
)
def test_queue_matches_a_reference_model(events):
    """Random chunk arrivals and pops against a dict-of-timesteps model of DESIGN §3."""
    q = ActionQueue(1, get_aggregate("latest_only"))
    model: dict[int, float] = {}
    executed = 0
    for i, (offset, length, pops) in enumerate(events):
        t0 = executed + offset - 5  # sometimes in the past, sometimes ahead
        if t0 < 0:
            t0 = 0
        if t0 > executed + len(model):  # a gap: the queue restarts at t0
            model, executed = {}, t0
        for k in range(length):
            t = t0 + k
            if t >= executed:
                model[t] = float(i)
        q.merge(t0, chunk([i] * length, joints=1))
        for _ in range(pops):
            a = q.pop()
            if executed in model:
                assert a is not None and a[0] == model.pop(executed)
                executed += 1
            else:
                assert a is None
        assert len(q) == len(model)
        assert q.next_timestep == executed
