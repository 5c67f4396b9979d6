"""The hold accounting: time per reason, stalls of the loop itself, the hold in progress."""

from asyncinf.runtime.holds import NO_CHUNK, SERVER_LOST, STALLED, HeldTime, HoldTracker

MS = 1_000_000
PERIOD = 10 * MS


def test_holds_are_timed_per_reason_and_the_current_one_ends_on_an_action():
    h = HoldTracker(PERIOD)
    t = 0
    for reason in [None, NO_CHUNK, NO_CHUNK, SERVER_LOST, SERVER_LOST, None]:
        t += PERIOD
        h.tick(t, reason)
        if reason == SERVER_LOST:
            assert h.reason == SERVER_LOST and h.current_s(t) > 0
    assert h.total_ns == {NO_CHUNK: 2 * PERIOD, SERVER_LOST: 2 * PERIOD}
    assert h.current_s(t) == 0 and h.reason == ""
    assert h.summary() == HeldTime(
        total_s=0.04, fraction=0.8, reasons_s={NO_CHUNK: 0.02, SERVER_LOST: 0.02}
    )


def test_a_gap_in_the_ticks_is_a_hold_of_the_reason_in_progress_or_a_stall():
    moving = HoldTracker(PERIOD)
    moving.tick(PERIOD, None)
    moving.tick(PERIOD + 5000 * MS, None)  # a paused control loop, then an action
    assert moving.total_ns == {STALLED: 5000 * MS - PERIOD}
    lost = HoldTracker(PERIOD)
    lost.tick(PERIOD, SERVER_LOST)
    lost.tick(PERIOD + 2000 * MS, None)  # a blocking re-handshake while the server was lost
    assert lost.total_ns == {SERVER_LOST: 2000 * MS - PERIOD}
    short = HoldTracker(PERIOD)
    short.tick(PERIOD, None)
    short.tick(PERIOD + 2 * PERIOD, None)  # a late tick, not a stall
    assert short.total_ns == {}
