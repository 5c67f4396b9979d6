"""A battery of bad command lines and config files, for every command that takes options.

Each case must exit 2 (a bad command line: an unknown option, a malformed argument, two
flags that disagree, a value typer cannot parse) or 78 (a bad value, in a flag or a file),
print one line `error: …` naming the option, print no traceback, and fail before any
process starts. Every case runs in this process through the CLI's own entry (`commands.run`,
which is what `main` calls), so the battery takes seconds; a representative subset also
runs as real `python -m asyncinf.runtime.cli` processes.
"""

from __future__ import annotations

import logging
import shlex
import signal
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from asyncinf.runtime.cli.commands import run

USAGE, CONFIG = 2, 78
LOCAL = "up --local"
REMOTE = "up --remote 127.0.0.1:9"

# (command line, exit code, what the error line must name). {d}: a folder of bad files;
# {busy}: a port another socket listens on.
CASES: list[tuple[str, int, str]] = [
    # --policy.*: built-in types' options and devices, checked before the server starts
    (f"{LOCAL} --policy.type=nope", CONFIG, "--policy.type='nope'"),
    (f"{LOCAL} --policy.type=act", CONFIG, "--policy.type='act'"),  # LeRobot not installed
    (f"{LOCAL} --policy.bogus=1", CONFIG, "--policy.bogus"),
    (f"{LOCAL} --policy.latency_ms=-1", CONFIG, "--policy.latency_ms=-1"),
    (f"{LOCAL} --policy.latency_ms=abc", CONFIG, "--policy.latency_ms='abc'"),
    (f"{LOCAL} --policy.period_s=0", CONFIG, "--policy.period_s=0"),
    (f"{LOCAL} --policy.amplitude=nan", CONFIG, "--policy.amplitude"),
    (f"{LOCAL} --policy.converge_s=-0.5", CONFIG, "--policy.converge_s"),
    (f"{LOCAL} --policy.fps=0", CONFIG, "--policy.fps=0"),
    (f"{LOCAL} --policy.device=gpu", CONFIG, "--policy.device='gpu'"),
    (f"{LOCAL} --policy.device=cuda:x", CONFIG, "--policy.device='cuda:x'"),
    (f"{LOCAL} --policy.device=cpu:0", CONFIG, "--policy.device='cpu:0'"),
    (f"{LOCAL} --policy.type=tiny_torch --policy.hidden=0", CONFIG, "--policy.hidden=0"),
    (f"{LOCAL} --policy.type=tiny_torch --policy.depth=1.5", CONFIG, "--policy.depth=1.5"),
    (f"{LOCAL} --policy.type=tiny_torch --policy.image_size=true", CONFIG, "--policy.image_size"),
    (f"{LOCAL} --policy.type=fake --policy.nope=1", CONFIG, "--policy.nope"),
    (f"{LOCAL} --policy=5", CONFIG, "--policy=5"),
    (f"{LOCAL} --policy_type=act --policy.type=scripted", USAGE, "--policy_type=act"),
    # --robot.*
    (f"{LOCAL} --robot=5", CONFIG, "--robot=5"),
    (f"{LOCAL} --robot.type=nope", CONFIG, "--robot.type='nope'"),
    (f"{LOCAL} --robot.cameras=7", CONFIG, "--robot.cameras=7"),
    (f"{LOCAL} --robot.nope=1", CONFIG, "--robot.nope"),
    (f"{LOCAL} --robot.type=so101_follower", CONFIG, "--robot.port"),
    # --rtc: a policy that can do it, and RtcSettings' values, checked before start
    (f"{LOCAL} --rtc --policy.type=tiny_torch", CONFIG, "--rtc: --policy.type=tiny_torch"),
    (f"{LOCAL} --rtc --policy.type=fake", CONFIG, "smolvla, pi0, pi05"),
    (f"{LOCAL} --rtc --rtc.execution_horizon=0", CONFIG, "--rtc.execution_horizon=0"),
    (f"{LOCAL} --rtc --rtc.execution_horizon=abc", CONFIG, "--rtc.execution_horizon='abc'"),
    (f"{LOCAL} --rtc --rtc.max_guidance_weight=-1", CONFIG, "--rtc.max_guidance_weight=-1"),
    (f"{LOCAL} --rtc --rtc.prefix_attention_schedule=CUBIC", CONFIG, "'CUBIC'"),
    (f"{LOCAL} --rtc --rtc.nope=1", CONFIG, "--rtc.nope"),
    (f"{LOCAL} --rtc.execution_horizon=5", USAGE, "--rtc.execution_horizon given without --rtc"),
    (f"{LOCAL} --no-rtc --rtc.execution_horizon=5", USAGE, "without --rtc"),
    (f"{LOCAL} --rtc --policy.disagreement=-1", CONFIG, "--policy.disagreement=-1"),
    (f"{LOCAL} --policy.seed=x", CONFIG, "--policy.seed='x'"),
    (f"{LOCAL} --config {{d}}/rtc5.yaml", CONFIG, "--rtc=5"),
    (f"{LOCAL} --config {{d}}/rtcact.yaml", CONFIG, "--policy.type=act cannot"),
    (f"{LOCAL} --config {{d}}/rtch0.yaml", CONFIG, "--rtc.execution_horizon=0"),
    (f"{REMOTE} --rtc --policy.type=act", CONFIG, "--rtc: --policy.type=act"),
    (f"{REMOTE} --rtc --rtc.max_guidance_weight=0", CONFIG, "--rtc.max_guidance_weight=0"),
    # --shm.*: checked in the supervisor, not when the processes attach
    (f"{LOCAL} --shm.obs_slots=1", CONFIG, "--shm.obs_slots"),
    (f"{LOCAL} --shm.obs_slots=abc", CONFIG, "--shm.obs_slots"),
    (f"{LOCAL} --shm.chunk_slots=0", CONFIG, "--shm.chunk_slots"),
    (f"{LOCAL} --shm.control_slots=1", CONFIG, "--shm.control_slots"),
    (f"{LOCAL} --shm.obs_slot_mb=0", CONFIG, "--shm.obs_slot_mb=0"),
    (f"{LOCAL} --shm.obs_slot_mb=-3", CONFIG, "--shm.obs_slot_mb=-3"),
    (f"{LOCAL} --shm.obs_slot_mb=0.1", CONFIG, "--shm.obs_slot_mb"),  # the frame does not fit
    (f"{LOCAL} --shm.obs_slot_mb=abc", CONFIG, "--shm.obs_slot_mb"),
    (f"{LOCAL} --shm.chunk_slot_bytes=10", CONFIG, "--shm.chunk_slot_bytes"),
    (f"{LOCAL} --shm.control_slot_bytes=99999999999", CONFIG, "--shm.control_slot_bytes"),
    (f"{LOCAL} --shm.when_full=maybe", CONFIG, "--shm.when_full='maybe'"),
    (f"{LOCAL} --shm.heartbeat_interval_s=0", CONFIG, "--shm.heartbeat_interval_s"),
    (f"{LOCAL} --shm.peer_timeout_s=0.1", CONFIG, "--shm.peer_timeout_s=0.1"),
    (f"{LOCAL} --shm.spin_us=-1", CONFIG, "--shm.spin_us"),
    (f"{LOCAL} --shm.nope=1", CONFIG, "--shm.nope"),
    (f"{LOCAL} --shm=5", CONFIG, "--shm=5"),
    # the client's and the server's own options
    (f"{LOCAL} --fps=0", CONFIG, "--fps=0"),
    (f"{LOCAL} --fps=-3", CONFIG, "--fps=-3"),
    (f"{LOCAL} --fps=100000", CONFIG, "--fps=100000"),
    (f"{LOCAL} --fps=abc", USAGE, "--fps"),
    (f"{LOCAL} --actions_per_chunk=0", CONFIG, "--actions_per_chunk=0"),
    (f"{LOCAL} --actions_per_chunk=abc", USAGE, "--actions_per_chunk"),
    (f"{LOCAL} --chunk_size_threshold=-1", CONFIG, "--chunk_size_threshold"),
    (f"{LOCAL} --chunk_size_threshold=abc", USAGE, "--chunk_size_threshold"),
    (f"{LOCAL} --aggregate_fn_name=nope", CONFIG, "--aggregate_fn_name='nope'"),
    (f"{LOCAL} --aggregate_fn_name=no_such_module:fn", CONFIG, "--aggregate_fn_name"),
    (f"{LOCAL} --similarity_atol=-1", CONFIG, "--similarity_atol=-1"),
    (f"{LOCAL} --image_fit=nope", CONFIG, "--image_fit='nope'"),
    (f"{LOCAL} --max_consecutive_errors=0", CONFIG, "--max_consecutive_errors"),
    (f"{LOCAL} --resend_after_s=0", CONFIG, "--resend_after_s=0"),
    (f"{LOCAL} --publish_timeout_s=0", CONFIG, "--publish_timeout_s=0"),
    (f"{LOCAL} --poll_s=-1", CONFIG, "--poll_s=-1"),
    (f"{LOCAL} --max_message_bytes=5", USAGE, "--max_message_bytes"),  # a --grpc.* option
    # the supervisor's options
    (f"{LOCAL} --duration=0", CONFIG, "--duration=0"),
    (f"{LOCAL} --duration=-1", CONFIG, "--duration=-1"),
    (f"{LOCAL} --duration=abc", USAGE, "--duration"),
    (f"{LOCAL} --start-timeout=0", CONFIG, "--start-timeout=0"),
    (f"{LOCAL} --stop-timeout=-1", CONFIG, "--stop-timeout=-1"),
    (f"{LOCAL} --hang-timeout=0", CONFIG, "--hang-timeout=0"),
    (f"{LOCAL} --max-restarts=-1", CONFIG, "--max-restarts=-1"),
    (f"{LOCAL} --max-restarts=x", USAGE, "--max-restarts"),
    (f"{LOCAL} --restart-backoff=-1", CONFIG, "--restart-backoff=-1"),
    # output files: their folder must exist and be writable before the run, not after it
    (f"{LOCAL} --summary-json {{d}}/nodir/s.json", CONFIG, "--summary-json="),
    (f"{LOCAL} --summary-json {{d}}/adir", CONFIG, "--summary-json="),
    (f"{LOCAL} --metrics {{d}}/nodir/m.jsonl", CONFIG, "--metrics="),
    (f"{LOCAL} --metrics {{d}}/adir", CONFIG, "--metrics="),
    (f"{LOCAL} --plot {{d}}/nodir/p.png", CONFIG, "--plot="),
    (f"{LOCAL} --status-json {{d}}/nodir/s.json", CONFIG, "--status-json="),
    # the command line itself
    (f"{LOCAL} --nope=1", USAGE, "--nope"),
    (f"{LOCAL} --fpss=30", USAGE, "--fpss"),
    (f"{LOCAL} stray", USAGE, "'stray'"),
    (f"{LOCAL} --policy.latency_ms", USAGE, "--policy.latency_ms"),
    (f"{LOCAL} --.x=1", USAGE, "'--.x=1'"),
    (f"{LOCAL} --remote 127.0.0.1:9", USAGE, "--local or --remote"),
    ("up", USAGE, "--local or --remote"),
    (f"{LOCAL} --server_address=127.0.0.1:9", USAGE, "--local or --remote"),
    # config files: wrong types, broken syntax, unknown keys
    (f"{LOCAL} --config {{d}}/robot5.yaml", CONFIG, "--robot=5"),
    (f"{LOCAL} --config {{d}}/policystr.yaml", CONFIG, "--policy='act'"),
    (f"{LOCAL} --config {{d}}/shmlist.yaml", CONFIG, "--shm=[1, 2]"),
    (f"{LOCAL} --config {{d}}/list.yaml", CONFIG, "--config"),
    (f"{LOCAL} --config {{d}}/empty.yaml", CONFIG, "--config"),
    (f"{LOCAL} --config {{d}}/broken.yaml", CONFIG, "--config"),
    (f"{LOCAL} --config {{d}}/broken.toml", CONFIG, "--config"),
    (f"{LOCAL} --config {{d}}/binary.yaml", CONFIG, "--config"),
    (f"{LOCAL} --config {{d}}/fpsfast.yaml", CONFIG, "--fps='fast'"),
    (f"{LOCAL} --config {{d}}/fpsneg.yaml", CONFIG, "--fps=-1"),
    (f"{LOCAL} --config {{d}}/unknown.yaml", CONFIG, "--nope"),
    (f"{LOCAL} --config {{d}}/cams7.yaml", CONFIG, "--robot.cameras=7"),
    (f"{LOCAL} --config {{d}}/camfront5.yaml", CONFIG, "--robot.cameras"),
    (f"{LOCAL} --config {{d}}/shm1.yaml", CONFIG, "--shm.obs_slots"),
    (f"{LOCAL} --config {{d}}/shmsmall.yaml", CONFIG, "--shm.obs_slot_mb"),
    (f"{LOCAL} --config {{d}}/lat.yaml", CONFIG, "--policy.latency_ms=-5"),
    (f"{LOCAL} --config {{d}}/policybogus.yaml", CONFIG, "--policy.bogus"),
    (f"{LOCAL} --config {{d}}/rt.toml", CONFIG, "--robot.type='5'"),
    (f"{LOCAL} --config {{d}}/grpc3.yaml", CONFIG, "--grpc"),
    (f"{LOCAL} --config {{d}}/missing.yaml", CONFIG, "--config"),
    (f"{LOCAL} --config {{d}}/adir", CONFIG, "--config"),
    # up --remote: addresses, token and TLS files, gRPC options
    ("up --remote nope", CONFIG, "--remote='nope'"),
    ("up --remote host:99999", CONFIG, "--remote='host:99999'"),
    ("up --remote :8080", CONFIG, "--remote=':8080'"),
    (f"{REMOTE} --token-file {{d}}/empty.tok", CONFIG, "--token-file="),
    (f"{REMOTE} --token-file {{d}}/spaces.tok", CONFIG, "--token-file="),
    (f"{REMOTE} --token-file {{d}}/latin1.tok", CONFIG, "--token-file="),
    (f"{REMOTE} --token-file {{d}}/missing.tok", CONFIG, "--token-file="),
    (f"{REMOTE} --tls-ca {{d}}/bad.pem", CONFIG, "--tls-ca="),
    (f"{REMOTE} --tls-ca {{d}}/missing.pem", CONFIG, "--tls-ca="),
    (f"{REMOTE} --tls-ca {{d}}/adir", CONFIG, "--tls-ca="),
    (f"{REMOTE} --image_codec=gif", CONFIG, "--image_codec='gif'"),
    (f"{REMOTE} --jpeg_quality=0", CONFIG, "--jpeg_quality=0"),
    (f"{REMOTE} --jpeg_quality=abc", USAGE, "--jpeg_quality"),
    (f"{REMOTE} --grpc.nope=1", CONFIG, "--grpc.nope"),
    (f"{REMOTE} --grpc.connect_timeout_s=0", CONFIG, "--connect_timeout_s=0"),
    (f"{REMOTE} --grpc.heartbeat_timeout_s=0.5", CONFIG, "--heartbeat_timeout_s=0.5"),
    (f"{REMOTE} --grpc.max_message_bytes=-1", CONFIG, "--max_message_bytes=-1"),
    (f"{REMOTE} --grpc.client_id={'x' * 65}", CONFIG, "--client_id="),
    (f"{REMOTE} --grpc.tls_cert={{d}}/bad.pem --grpc.tls_key={{d}}/bad.pem", CONFIG, "--tls-cert="),
    (f"{REMOTE} --grpc.tls_cert={{d}}/bad.pem", CONFIG, "--tls-cert="),
    (f"{REMOTE} --policy.bogus=1", CONFIG, "--policy.bogus"),
    (f"{REMOTE} --shm.obs_slots=1", CONFIG, "--shm.obs_slots"),
    (f"{REMOTE} --summary-json {{d}}/nodir/s.json", CONFIG, "--summary-json="),
    (f"{REMOTE} --server_address=127.0.0.1:8", USAGE, "--server_address=127.0.0.1:8"),
    # serve: the same server checks as up --local, and the address it is to listen on
    ("serve --policy.type=nope --robot.type=sim", CONFIG, "--policy.type='nope'"),
    ("serve --policy.type=nope", CONFIG, "--policy.type='nope'"),
    ("serve --policy.type=scripted", CONFIG, "--robot.type"),
    ("serve --policy.bogus=1 --robot.type=sim", CONFIG, "--policy.bogus"),
    ("serve --policy.latency_ms=-1 --robot.type=sim", CONFIG, "--policy.latency_ms=-1"),
    ("serve --policy.device=gpu --robot.type=sim", CONFIG, "--policy.device='gpu'"),
    ("serve --robot.type=sim --robot.cameras=7 --policy.type=scripted", CONFIG, "--robot.cameras"),
    ("serve --fps=-1 --robot.type=sim --policy.type=scripted", CONFIG, "--fps=-1"),
    ("serve --actions_per_chunk=0 --robot.type=sim", CONFIG, "--actions_per_chunk=0"),
    ("serve --port={busy}", CONFIG, "--port={busy}"),
    ("serve --host=no.such.host.invalid --port=0", CONFIG, "--host=no.such.host.invalid"),
    ("serve --host=999.1.1.1 --port=0", CONFIG, "--host=999.1.1.1"),
    ("serve --host=192.0.2.1 --port=0", CONFIG, "--host=192.0.2.1"),  # not this host's
    ("serve --port=0 --tls-cert {d}/bad.pem --tls-key {d}/bad.pem", CONFIG, "--tls-cert="),
    ("serve --port=0 --tls-cert {d}/bad.pem", CONFIG, "--tls-cert="),
    ("serve --port=0 --tls-cert {d}/missing.pem --tls-key {d}/bad.pem", CONFIG, "--tls-cert="),
    ("serve --port=0 --token-file {d}/empty.tok", CONFIG, "--token-file="),
    ("serve --port=0 --token-file {d}/spaces.tok", CONFIG, "--token-file="),
    ("serve --port=0 --grpc.tls_client_ca={d}/bad.pem", CONFIG, "--tls-client-ca"),
    ("serve --port=70000", CONFIG, "--port=70000"),
    ("serve --port=0 --robot=5 --policy.type=scripted", CONFIG, "--robot=5"),
    ("serve --port=0 --policy=act", CONFIG, "--policy='act'"),
    ("serve --port=abc", USAGE, "--port"),
    ("serve --port=0 --shm.obs_slots=1", USAGE, "--shm.*"),
    ("serve --port=0 --nope=1", USAGE, "--nope"),
    ("serve --port=0 --similarity_atol=-1", CONFIG, "--similarity_atol=-1"),
    ("serve --port=0 --grpc.max_workers=1", CONFIG, "--max_workers=1"),
    ("serve --port=0 --grpc.nope=1", CONFIG, "--grpc.nope"),
    ("serve --port=0 --grpc.when_full=maybe", CONFIG, "--when_full='maybe'"),
    ("serve --port=0 --rtc.execution_horizon=3", USAGE, "without --rtc"),
    ("serve --port=0 --rtc --rtc.execution_horizon=0", CONFIG, "--rtc.execution_horizon=0"),
    ("serve --port=0 --rtc --policy.type=fake --robot.type=sim", CONFIG, "--rtc: --policy.type"),
    # robot commissioning
    ("robot check --robot.type=nope", CONFIG, "--robot.type='nope'"),
    ("robot check", CONFIG, "--robot.type"),
    ("robot check --robot.type=sim --robot.cameras=7", CONFIG, "--robot.cameras=7"),
    ("robot check --robot.type=sim --frames=abc", USAGE, "--frames"),
    ("robot check --robot.type=sim --policy.type=x", USAGE, "--policy"),
    ("robot emulate --robot.type=sim", CONFIG, "--robot.type=sim"),
    ("robot emulate --robot.type=so101_follower --drop-rate=2", CONFIG, "--drop-rate=2"),
    ("robot emulate --robot.type=so101_follower --robot.nope=1", CONFIG, "--robot.nope"),
    ("robot emulate --robot.type=so101_follower --seed=abc", USAGE, "--seed"),
    ("robot nope", USAGE, "'nope'"),
    # benchmarks
    ("bench transport --sizes=abc", USAGE, "--sizes"),
    ("bench transport --sizes=-5", USAGE, "--sizes"),
    ("bench transport --mode=nope", USAGE, "--mode"),
    ("bench transport --transports=nope", USAGE, "--transports"),
    ("bench transport --iterations=0", USAGE, "--iterations"),
    ("bench transport --json {d}/nodir/x.json", USAGE, "--json="),
    ("bench e2e --policy.type=nope", CONFIG, "--policy.type='nope'"),
    ("bench e2e --policy.bogus=1", CONFIG, "--policy.bogus"),
    ("bench e2e --json {d}/nodir/x.json", CONFIG, "--json="),
    ("bench e2e --robot.port=/dev/x", CONFIG, "--robot.type"),
    ("bench e2e --server.x=1", USAGE, "--server.x=1"),
    ("bench e2e --g=abc", USAGE, "--g"),
    ("bench e2e --transport=x", USAGE, "--transport"),
    ("bench e2e --duration=abc", USAGE, "--duration"),
    ("bench e2e --duration=0", CONFIG, "--duration=0"),
    ("bench e2e --fps=0", CONFIG, "--fps=0"),
    ("bench e2e --latency_ms=-1", CONFIG, "latency_ms=-1"),
    ("bench e2e --width=0", CONFIG, "--width=0"),
    ("bench e2e --rtc.execution_horizon=3", USAGE, "without --rtc"),
    ("bench e2e --rtc --rtc.execution_horizon=0", CONFIG, "--rtc.execution_horizon=0"),
    ("bench e2e --rtc --policy.type=tiny_torch", CONFIG, "--rtc: --policy.type=tiny_torch"),
    ("bench e2e --disagreement=-1", CONFIG, "--policy.disagreement=-1"),
    ("bench e2e --disagreement=1 --policy.type=scripted", USAGE, "--disagreement"),
    ("nope", USAGE, "'nope'"),
]

FILES = {
    "robot5.yaml": "robot: 5\n",
    "policystr.yaml": "policy: act\n",
    "shmlist.yaml": "shm: [1, 2]\n",
    "list.yaml": "- 1\n- 2\n",
    "empty.yaml": "",
    "broken.yaml": "fps: [\n",
    "broken.toml": "fps = \n",
    "fpsfast.yaml": "fps: fast\n",
    "fpsneg.yaml": "fps: -1\n",
    "unknown.yaml": "nope: 1\n",
    "cams7.yaml": "robot:\n  type: sim\n  cameras: 7\n",
    "camfront5.yaml": "robot:\n  type: sim\n  cameras: {front: 5}\n",
    "shm1.yaml": "shm:\n  obs_slots: 1\n",
    "shmsmall.yaml": "shm: {obs_slot_mb: 0.1}\n",
    "lat.yaml": "policy:\n  type: scripted\n  latency_ms: -5\n",
    "policybogus.yaml": "policy: {type: scripted, bogus: 1}\n",
    "rt.toml": "[robot]\ntype = 5\n",
    "grpc3.yaml": "grpc: 3\n",
    "rtc5.yaml": "rtc: 5\n",
    "rtcact.yaml": "rtc: true\npolicy: {type: act}\n",
    "rtch0.yaml": "rtc: {execution_horizon: 0}\n",
    "empty.tok": "",
    "spaces.tok": "two words\n",
    "bad.pem": "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n",
}


def write_files(d: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (d / name).write_text(text)
    return d


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> Path:
    d = write_files(tmp_path_factory.mktemp("bad"), FILES)
    (d / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (d / "latin1.tok").write_bytes("caf\xe9".encode("latin-1"))
    (d / "adir").mkdir()
    return d


@pytest.fixture(scope="module")
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


class PastTheChecks(BaseException):
    """A case got past the checks into a run: the battery's guard against hanging on it."""


def _argv(line: str, d: Path, busy: int) -> list[str]:
    return shlex.split(line.replace("{d}", str(d)).replace("{busy}", str(busy)))


def _check(code: int, text: str, expected: int, names: str) -> None:
    assert "Traceback" not in text, text
    assert code == expected, text
    errors = [line for line in text.splitlines() if line.lower().startswith("error:")]
    assert len(errors) == 1, f"one error line expected:\n{text}"
    assert names in errors[0], f"{names!r} not named in: {errors[0]}"
    assert "started (pid" not in text, f"a process was started:\n{text}"


def run_case(line: str, d: Path, busy: int, capsys, caplog) -> tuple[int, str]:
    """`line` through the CLI's entry, in this process: its exit code, and all it printed and
    logged. A case that gets past the checks into a run is stopped after 60 s."""
    caplog.set_level(logging.INFO)

    def past(_signum, _frame):
        raise PastTheChecks(line)

    previous = signal.signal(signal.SIGALRM, past)
    signal.alarm(60)
    try:
        got = run(_argv(line, d, busy))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out = capsys.readouterr()
    return got, out.out + out.err + caplog.text


@pytest.mark.parametrize(("line", "code", "names"), CASES, ids=[c[0] for c in CASES])
def test_bad_option_exits_with_one_line(line, code, names, bad_files, busy_port, capsys, caplog):
    got, text = run_case(line, bad_files, busy_port, capsys, caplog)
    _check(got, text, code, names.replace("{busy}", str(busy_port)))


def test_the_battery_is_large_and_covers_every_command():
    assert len(CASES) >= 100
    commands = {" ".join(line.split()[:2]) for line, _, _ in CASES}
    assert {"up --local", "up --remote", "serve --port=0", "robot check", "robot emulate",
            "bench transport", "bench e2e"} <= commands  # fmt: skip
    assert any("--config" in line for line, _, _ in CASES)


# One or more of each kind, as real processes: the entry point, logging and stop-signal
# holding as a user gets them.
SUBPROCESS = [
    f"{LOCAL} --policy.bogus=1",
    f"{LOCAL} --shm.obs_slot_mb=0.1",
    f"{LOCAL} --config {{d}}/robot5.yaml",
    f"{LOCAL} --summary-json {{d}}/nodir/s.json",
    f"{LOCAL} --metrics {{d}}/nodir/m.jsonl",
    f"{LOCAL} --fps=abc",
    f"{LOCAL} --nope=1",
    f"{REMOTE} --token-file {{d}}/empty.tok",
    f"{REMOTE} --tls-ca {{d}}/bad.pem",
    "serve --policy.type=nope --robot.type=sim",
    "serve --port={busy}",
    "serve --port=0 --tls-cert {d}/bad.pem --tls-key {d}/bad.pem",
    "serve --host=no.such.host.invalid --port=0",
    "robot check --robot.type=sim --robot.cameras=7",
    "bench e2e --policy.type=nope",
    "bench transport --mode=nope",
]


def test_a_subset_as_real_processes(bad_files, busy_port):
    expected = {line: (code, names) for line, code, names in CASES}

    def one(line: str) -> tuple[str, int, str]:
        argv = [sys.executable, "-m", "asyncinf.runtime.cli", *_argv(line, bad_files, busy_port)]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        return line, r.returncode, r.stdout + r.stderr

    with ThreadPoolExecutor(4) as pool:
        for line, code, text in pool.map(one, SUBPROCESS):
            want, names = expected[line]
            _check(code, text, want, names.replace("{busy}", str(busy_port)))


@pytest.mark.slow
def test_frames_the_policy_asks_for_that_outgrow_their_slot_are_a_config_error():
    """Only the handshake says what size the policy wants its frames: 1024 rows (4 MiB) from
    a 640×480 camera (0.9 MiB, which fits the 2 MiB slot the checks before start saw)."""
    r = subprocess.run(
        [sys.executable, "-m", "asyncinf.runtime.cli", "up", "--local", "--duration=30",
         "--policy.type=tiny_torch", "--policy.image_size=1024", "--policy.hidden=8",
         "--policy.depth=1", "--shm.obs_slot_mb=2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == CONFIG, r.stderr
    assert "Traceback" not in r.stderr
    assert "client stopped: observation frame of" in r.stderr
    assert "raise it with --shm.obs_slot_mb=" in r.stderr


@pytest.mark.slow
def test_a_device_this_machine_lacks_is_a_config_error_not_a_load_failure():
    """Only torch, in the server, can tell: no CUDA here, or fewer than 100 GPUs."""
    r = subprocess.run(
        [sys.executable, "-m", "asyncinf.runtime.cli", "up", "--local", "--duration=30",
         "--policy.type=tiny_torch", "--policy.device=cuda:99"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == CONFIG, r.stderr
    assert "Traceback" not in r.stderr
    assert "server failed to start: --policy.device=cuda:99" in r.stderr
    assert "client started" not in r.stderr
