"""How `bench transport` rows take turns: back to back in settled blocks, paced one by one."""

import time

from asyncinf.runtime.bench import transport as bt


def _recorder(log: list[tuple[str, int]], row: str, cost_s: float = 0.0):
    def roundtrip(obs) -> None:
        log.append((row, obs.timestep))
        if cost_s:
            time.sleep(cost_s)

    return roundtrip


def _runs(log: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """(row, length) of each run of consecutive round trips of one row."""
    runs: list[tuple[str, int]] = []
    for row, _ in log:
        if runs and runs[-1][0] == row:
            runs[-1] = (row, runs[-1][1] + 1)
        else:
            runs.append((row, 1))
    return runs


def test_back_to_back_rows_take_turns_in_blocks_after_settling():
    log: list[tuple[str, int]] = []
    rows = {r: _recorder(log, r, 2e-4) for r in ("a", "b", "ring")}
    samples = bt.measure(rows, 64, "backtoback", n=2 * bt.BLOCK + 5, warmup=3)
    assert {r: len(v) for r, v in samples.items()} == dict.fromkeys(rows, 2 * bt.BLOCK + 5)
    runs = _runs(log)
    assert len(runs) == 3 * 3  # three turns: two whole blocks and the rest
    for row, length in runs[:-3]:
        # at least one settling round trip (SETTLE_S of them) before the block's
        assert length > bt.BLOCK, (row, length)
    assert [r for r, _ in runs[:3]] != [r for r, _ in runs[3:6]]  # who goes first rotates
    timesteps = [t for _, t in log]
    assert timesteps == sorted(set(timesteps))  # every observation its own timestep


def test_a_row_alone_or_paced_takes_no_settling_round_trips():
    log: list[tuple[str, int]] = []
    samples = bt.measure({"a": _recorder(log, "a")}, 64, "backtoback", n=7, warmup=2)
    assert len(samples["a"]) == 7 and len(log) == 9
    log.clear()
    rows = {r: _recorder(log, r) for r in ("a", "b")}
    samples = bt.measure(rows, 64, "paced", n=3, warmup=1)
    assert len(log) == 8 and {len(v) for v in samples.values()} == {3}
    for i in range(0, 8, 2):  # each turn one round trip of each row
        assert {log[i][0], log[i + 1][0]} == {"a", "b"}
