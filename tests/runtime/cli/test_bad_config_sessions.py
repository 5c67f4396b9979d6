"""The bad-config battery (`test_bad_config.py`) for several sessions: `--robots` files,
`--max_sessions` and `--batch.*`. Same contract: exit 2 or 78, one `error:` line naming the
option, no traceback, no process started."""

from __future__ import annotations

import pytest
from test_bad_config import CONFIG, LOCAL, REMOTE, USAGE, _check, run_case, write_files

ROBOTS = f"{LOCAL} --robots {{d}}"
CASES: list[tuple[str, int, str]] = [
    (f"{ROBOTS}/missing.yaml", CONFIG, "--robots"),
    (f"{ROBOTS}/notalist.yaml", CONFIG, "`robots:`"),
    (f"{ROBOTS}/empty.yaml", CONFIG, "--robots"),
    (f"{ROBOTS}/extra.yaml", CONFIG, "`robots:`"),
    (f"{ROBOTS}/dup.yaml", CONFIG, "'a'"),
    (f"{ROBOTS}/noname.yaml", CONFIG, "name=None"),
    (f"{ROBOTS}/badname.yaml", CONFIG, "name='a b'"),
    (f"{ROBOTS}/notype.yaml", CONFIG, "type=None"),
    (f"{ROBOTS}/badtype.yaml", CONFIG, "--robot.type='nope'"),
    (f"{ROBOTS}/badkey.yaml", CONFIG, "'colour'"),
    (f"{ROBOTS}/badoption.yaml", CONFIG, "--robot.nope"),
    (f"{ROBOTS}/optionslist.yaml", CONFIG, "options=[1]"),
    (f"{ROBOTS}/entry5.yaml", CONFIG, "robot 2"),
    (f"{ROBOTS}/two.yaml --robot.type=sim", CONFIG, "--robots"),
    (f"{ROBOTS}/two.yaml --max_sessions=3", CONFIG, "--max_sessions=3"),
    (f"{ROBOTS}/two.yaml --batch.max_size=0", CONFIG, "--batch.max_size=0"),
    (f"{ROBOTS}/two.yaml --metrics {{d}}/nodir/m.jsonl", CONFIG, "m.a.jsonl"),
    (f"{REMOTE} --robots {{d}}/two.yaml", USAGE, "--robots"),
    (f"{LOCAL} --max_sessions=0", CONFIG, "--max_sessions=0"),
    (f"{LOCAL} --max_sessions=x", CONFIG, "--max_sessions='x'"),
    (f"{LOCAL} --batch.max_wait_ms=-1", CONFIG, "--batch.max_wait_ms=-1"),
    (f"{LOCAL} --batch=5", CONFIG, "--batch=5"),
    ("serve --port=0 --max_sessions=0", CONFIG, "--max_sessions=0"),
    ("serve --port=0 --max_sessions=true", CONFIG, "--max_sessions=True"),
    ("serve --port=0 --max_sessions=4 --grpc.max_workers=4", CONFIG, "--max_workers=4"),
    ("serve --port=0 --batch.max_size=0", CONFIG, "--batch.max_size=0"),
    ("serve --port=0 --batch.max_size=abc", CONFIG, "--batch.max_size='abc'"),
    ("serve --port=0 --batch.max_wait_ms=5000", CONFIG, "--batch.max_wait_ms=5000"),
    ("serve --port=0 --batch.nope=1", CONFIG, "--batch.nope"),
    ("serve --port=0 --batch=5", CONFIG, "--batch=5"),
]

FILES = {
    "notalist.yaml": "robots: {name: a, type: sim}\n",
    "empty.yaml": "",
    "extra.yaml": "robots: [{name: a, type: sim}]\nfps: 30\n",
    "dup.yaml": "robots: [{name: a, type: sim}, {name: a, type: sim}]\n",
    "noname.yaml": "robots: [{type: sim}]\n",
    "badname.yaml": "robots: [{name: a b, type: sim}]\n",
    "notype.yaml": "robots: [{name: a}]\n",
    "badtype.yaml": "robots: [{name: a, type: sim}, {name: b, type: nope}]\n",
    "badkey.yaml": "robots: [{name: a, type: sim, colour: red}]\n",
    "badoption.yaml": "robots: [{name: a, type: sim, options: {nope: 1}}]\n",
    "optionslist.yaml": "robots: [{name: a, type: sim, options: [1]}]\n",
    "entry5.yaml": "robots: [{name: a, type: sim}, 5]\n",
    "two.yaml": "robots: [{name: a, type: sim}, {name: b, type: sim}]\n",
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("bad_sessions"), FILES)


@pytest.mark.parametrize(("line", "code", "names"), CASES, ids=[c[0] for c in CASES])
def test_bad_session_option_exits_with_one_line(line, code, names, bad_files, capsys, caplog):
    _check(*run_case(line, bad_files, 0, capsys, caplog), code, names)
