"""Every unit `asyncinf systemd` can write: checked by `systemd-analyze verify` and key by key.

`systemd-analyze verify` works offline (no systemd as PID 1 needed) with --man=no and
--generators=no. It reports unknown keys and unparsable values only as warnings and still exits
0, so a warning that names the unit counts as a failure here. Where the tool is missing, the
offline checks below (known keys, `Key=value` syntax) still run: nothing is skipped.
"""

import os
import shlex
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from asyncinf.runtime.cli import app
from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.supervise import systemd_units
from asyncinf.runtime.supervise.exitcodes import BOOT_ERRORS, ExitCode
from asyncinf.runtime.supervise.systemd_units import (
    UnitOptions,
    asyncinf_executable,
    exec_quote,
    serve_unit,
    supervisor_unit,
)

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
KNOWN_KEYS = {
    "Unit": {"Description", "Wants", "After", "StartLimitIntervalSec", "StartLimitBurst"},
    "Service": {
        "Type", "NotifyAccess", "ExecStart", "User", "SupplementaryGroups", "Environment",
        "TimeoutStartSec", "TimeoutStopSec", "WatchdogSec", "KillMode", "OOMPolicy", "Restart",
        "RestartSec", "RestartPreventExitStatus", "SuccessExitStatus",
    },
    "Install": {"WantedBy"},
}  # fmt: skip
CHOICES = {
    "Type": {"simple", "exec", "forking", "oneshot", "dbus", "notify", "notify-reload", "idle"},
    "NotifyAccess": {"none", "main", "exec", "all"},
    "KillMode": {"control-group", "mixed", "process", "none"},
    "OOMPolicy": {"continue", "stop", "kill"},
    "Restart": {
        "no", "on-success", "on-failure", "on-abnormal", "on-watchdog", "on-abort", "always",
    },
}  # fmt: skip
SECONDS = {
    "TimeoutStartSec",
    "TimeoutStopSec",
    "WatchdogSec",
    "RestartSec",
    "StartLimitIntervalSec",
}
EXIT_STATUSES = {"RestartPreventExitStatus", "SuccessExitStatus"}

TRICKY = (
    "--task=pick up the red cube",
    "--robot.cameras={front: {type: opencv, index_or_path: 0}}",
    'say "hi"',
    "back\\slash",
    "100%",
    "$HOME",
    ";",
    "",
    "héllo",
)


def parse_unit(text):
    """{section: {key: [values]}}, failing on anything that is not a section, key or comment."""
    sections, current = {}, None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep and key.strip() == key, f"line {n}: {line!r}"
        current.setdefault(key, []).append(value)
    return sections


def offline_problems(text):
    """What systemd-analyze would warn about, for the keys these units use."""
    sections = parse_unit(text)
    problems = [f"unknown section [{s}]" for s in sections if s not in KNOWN_KEYS]
    for section, keys in sections.items():
        for key, values in keys.items():
            if key not in KNOWN_KEYS.get(section, ()):
                problems.append(f"unknown key {key} in [{section}]")
            for value in values:
                if key in CHOICES and value not in CHOICES[key]:
                    problems.append(f"{key}={value}: not one of {sorted(CHOICES[key])}")
                if key in SECONDS and not is_seconds(value):
                    problems.append(f"{key}={value}: not a time in seconds")
                if key in EXIT_STATUSES and not all(0 <= int(c) <= 255 for c in value.split()):
                    problems.append(f"{key}={value}: not exit statuses")
    if not parse_unit(text)["Service"]["ExecStart"][0].startswith("/"):
        problems.append("ExecStart= is not an absolute path")
    return problems


def is_seconds(value):
    try:
        return float(value) >= 0
    except ValueError:
        return False


def verify_problems(path):
    r = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", "--man=no", "--generators=no", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    problems = [line for line in r.stderr.splitlines() if path.name in line]
    if r.returncode != 0:
        problems.append(f"exit {r.returncode}: {r.stderr.strip()}")
    return problems


def problems(unit, directory, checker):
    """Problems systemd-analyze ("verify") or the offline key checks ("offline") find."""
    path = directory / unit.name
    path.write_text(unit.text)
    if checker == "offline":
        return offline_problems(unit.text)
    if SYSTEMD_ANALYZE is None:  # never a silent skip: the key checks stand in, visibly
        warnings.warn("systemd-analyze not found: units checked key by key only", stacklevel=2)
        return offline_problems(unit.text)
    return verify_problems(path)


def service(unit):
    return {k: v[-1] for k, v in parse_unit(unit.text)["Service"].items()}


def exec_argv(unit):
    """ExecStart= read back the way systemd reads it (quotes, \\-escapes, %% and $$)."""
    return [
        w.replace("%%", "%").replace("$$", "$") for w in shlex.split(service(unit)["ExecStart"])
    ]


VARIANTS = {
    "local": supervisor_unit,
    "remote": lambda: supervisor_unit("gpu-host.lan:8080"),
    "serve": serve_unit,
    "local-user-extra": lambda: supervisor_unit(
        None, UnitOptions(user="robot", extra_args=TRICKY), name="arm-left"
    ),
    "remote-ipv6-timeouts": lambda: supervisor_unit(
        "[fd00::2]:9000",
        UnitOptions(start_timeout_s=600, stop_timeout_s=2.5, watchdog_s=0, restart_s=0.5),
    ),
    "serve-public-extra": lambda: serve_unit(
        "0.0.0.0", 9001, UnitOptions(user="gpu", extra_args=("--token-file", "/etc/tok"))
    ),
    "serve-no-watchdog": lambda: serve_unit(options=UnitOptions(watchdog_s=0)),
}


CHECKERS = ["verify", "offline"]


@pytest.mark.parametrize("checker", CHECKERS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_verifies(variant, checker, tmp_path):
    unit = VARIANTS[variant]()
    assert problems(unit, tmp_path, checker) == []


@pytest.mark.parametrize("checker", CHECKERS)
@pytest.mark.parametrize(
    "breakage",
    [
        ("KillMode=mixed", "KillMode=bogus"),
        ("Type=notify", "Type=notify\nFooBar=1"),
        ("WatchdogSec=30", "WatchdogSec=soon"),
        ("RestartPreventExitStatus=", "RestartPreventExitStatus=999 "),
    ],
)
def test_the_checks_catch_a_broken_unit(breakage, checker, tmp_path):
    unit = supervisor_unit()
    broken = systemd_units.Unit(unit.name, unit.text.replace(*breakage))
    assert broken.text != unit.text
    assert problems(broken, tmp_path, checker) != []


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="only systemd-analyze looks at the file system")
def test_verify_catches_a_missing_executable(tmp_path):
    unit = supervisor_unit(options=UnitOptions(executable=("/nonexistent/asyncinf",)))
    assert problems(unit, tmp_path, "verify") != []


def test_execstart_is_the_installed_asyncinf():
    executable = asyncinf_executable()
    assert executable == (str(Path(sys.executable).absolute().parent / "asyncinf"),)
    assert os.path.isabs(executable[0]) and os.access(executable[0], os.X_OK)
    assert exec_argv(supervisor_unit())[0] == executable[0]


def test_local_unit_keys():
    unit = supervisor_unit()
    s = service(unit)
    assert unit.name == "asyncinf.service"
    assert s["Type"] == "notify" and s["NotifyAccess"] == "main"
    assert s["KillMode"] == "mixed"
    assert s["Restart"] == "on-failure" and float(s["RestartSec"]) > 0
    assert {int(c) for c in s["RestartPreventExitStatus"].split()} == {int(c) for c in BOOT_ERRORS}
    assert s["SuccessExitStatus"].split() == [str(int(ExitCode.INTERRUPTED))]
    assert s["SupplementaryGroups"].split() == ["dialout", "video"]
    assert s["Environment"] == "PYTHONUNBUFFERED=1"
    assert s["OOMPolicy"] == "continue"
    assert int(s["TimeoutStartSec"]) >= 2 * 300  # server load, then robot connect
    assert int(s["TimeoutStopSec"]) > 10  # longer than up's --stop-timeout
    assert int(s["WatchdogSec"]) == 30
    assert "User" not in s
    assert exec_argv(unit)[1:] == [
        "up",
        "--local",
        "--start-timeout",
        "300",
        "--stop-timeout",
        "10",
    ]
    sections = parse_unit(unit.text)
    assert sections["Install"]["WantedBy"] == ["multi-user.target"]
    assert "After" not in sections["Unit"]  # nothing to wait for: no network involved


@pytest.mark.parametrize("code", [ExitCode.SERVER_BUSY, ExitCode.STALLED])
def test_the_units_restart_a_busy_server_and_a_stalled_run(code):
    # systemd restarts on-failure on any exit status not listed as prevented or success.
    for unit in (supervisor_unit(), supervisor_unit("gpu-host.lan:8080")):
        s = service(unit)
        assert s["Restart"] == "on-failure"
        assert str(int(code)) not in s["RestartPreventExitStatus"].split()
        assert str(int(code)) not in s["SuccessExitStatus"].split()
        assert f"also on {int(code)}" in unit.text or f"and {int(code)}" in unit.text


def test_remote_unit_waits_for_the_network():
    unit = supervisor_unit("gpu-host.lan:8080")
    assert exec_argv(unit)[1:4] == ["up", "--remote", "gpu-host.lan:8080"]
    assert parse_unit(unit.text)["Unit"]["After"] == ["network-online.target"]
    assert parse_unit(unit.text)["Unit"]["Wants"] == ["network-online.target"]
    assert service(unit)["SupplementaryGroups"] == "dialout video"


def test_timeouts_follow_the_supervisor_options():
    opts = UnitOptions(start_timeout_s=600, stop_timeout_s=2.5, watchdog_s=0, restart_s=0.5)
    unit = supervisor_unit("[fd00::2]:9000", opts)
    s = service(unit)
    assert float(s["TimeoutStopSec"]) > 2.5 and float(s["TimeoutStartSec"]) >= 1200
    assert s["RestartSec"] == "0.5"
    assert "WatchdogSec" not in s
    argv = exec_argv(unit)
    assert argv[argv.index("--stop-timeout") + 1] == "2.5"
    assert argv[argv.index("--start-timeout") + 1] == "600"


def test_serve_unit_keys():
    unit = serve_unit("0.0.0.0", 9001, UnitOptions(user="gpu", extra_args=("--token-file", "/t")))
    s = service(unit)
    assert unit.name == "asyncinf-serve.service"
    assert exec_argv(unit)[1:] == [
        "serve", "--host", "0.0.0.0", "--port", "9001", "--token-file", "/t",
    ]  # fmt: skip
    assert s["Type"] == "notify" and s["User"] == "gpu" and s["KillMode"] == "mixed"
    assert {int(c) for c in s["RestartPreventExitStatus"].split()} == {int(c) for c in BOOT_ERRORS}
    assert "SupplementaryGroups" not in s  # no robot on a GPU host
    assert int(s["WatchdogSec"]) >= 300  # outlasts a policy load inside the serving loop
    assert parse_unit(unit.text)["Unit"]["After"] == ["network-online.target"]


@pytest.mark.parametrize("arg", TRICKY)
def test_exec_quote_round_trips(arg):
    assert [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(exec_quote(arg))] == [arg]


def test_user_and_extra_args_reach_the_unit():
    unit = supervisor_unit(None, UnitOptions(user="robot", extra_args=TRICKY), name="arm-left")
    assert unit.name == "arm-left.service"
    assert service(unit)["User"] == "robot"
    assert exec_argv(unit)[-len(TRICKY) :] == list(TRICKY)


@pytest.mark.parametrize(
    "make",
    [
        lambda: supervisor_unit("gpu-host"),
        lambda: supervisor_unit("gpu-host:0"),
        lambda: supervisor_unit("gpu-host:http"),
        lambda: supervisor_unit(options=UnitOptions(extra_args=("--stop-timeout=20",))),
        lambda: supervisor_unit(options=UnitOptions(extra_args=("--remote", "h:1"))),
        lambda: serve_unit(options=UnitOptions(extra_args=("--port", "1"))),
        lambda: serve_unit(port=70000),
        lambda: supervisor_unit(name="bad name"),
        lambda: UnitOptions(user="robot; rm -rf /"),
        lambda: UnitOptions(stop_timeout_s=0),
        lambda: UnitOptions(watchdog_s=-1),
    ],
)
def test_bad_input_is_a_config_error(make):
    with pytest.raises(ConfigError):
        make()


runner = CliRunner()


def test_cli_prints_the_unit():
    r = runner.invoke(app, ["systemd", "--local", "--extra-args", "--robot.type=sim --fps 30"])
    assert r.exit_code == 0, r.output
    expected = supervisor_unit(None, UnitOptions(extra_args=("--robot.type=sim", "--fps", "30")))
    assert r.stdout == expected.text


def test_cli_writes_the_unit_and_says_how_to_enable_it(tmp_path):
    out = tmp_path / "units"
    r = runner.invoke(app, ["systemd", "--serve", "--host", "0.0.0.0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    written = out / "asyncinf-serve.service"
    assert written.read_text() == serve_unit("0.0.0.0").text
    assert str(written) in r.stdout
    assert f"sudo cp {written} /etc/systemd/system/" in r.stdout
    assert "systemctl daemon-reload" in r.stdout
    assert "systemctl enable --now asyncinf-serve.service" in r.stdout


def test_cli_into_a_system_unit_dir_needs_no_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(systemd_units, "SYSTEM_UNIT_DIRS", (tmp_path,))
    r = runner.invoke(app, ["systemd", "--remote", "gpu:8080", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "cp " not in r.stdout and "systemctl enable --now asyncinf.service" in r.stdout


def test_cli_notes_a_loopback_server():
    r = runner.invoke(app, ["systemd", "--serve"])
    assert r.exit_code == 0
    assert "127.0.0.1" in r.stderr and "--host 0.0.0.0" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--local", "--serve"],
        ["--local", "--remote", "h:1"],
        ["--local", "--extra-args", "--task 'unbalanced"],
        ["--local", "--extra-args", "--stop-timeout 30"],
        ["--remote", "nohostport"],
    ],
)
def test_cli_bad_input_exits_with_config_error(args):
    r = runner.invoke(app, ["systemd", *args])
    assert r.exit_code == ExitCode.CONFIG_ERROR, r.output
    assert r.stderr.startswith("error: ")
    assert r.stdout == ""


def test_cli_help_explains_the_unit():
    r = runner.invoke(app, ["systemd", "--help"])
    assert r.exit_code == 0
    assert "Type=notify" in r.stdout and "--extra-args" in r.stdout
