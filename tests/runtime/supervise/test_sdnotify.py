"""sd_notify against real AF_UNIX datagram sockets, as systemd listens for it."""

import logging
import os
import shutil
import socket
import tempfile
import uuid

import pytest

from asyncinf.runtime.supervise import sdnotify
from asyncinf.runtime.testing import ManualClock


@pytest.fixture
def path_socket(monkeypatch):
    """A datagram socket bound to a file, like systemd's /run/systemd/notify."""
    # tmp_path can exceed sun_path's 108 bytes; a short directory of our own cannot.
    directory = tempfile.mkdtemp(prefix="sdn-")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(directory, "notify")
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()
    shutil.rmtree(directory)


@pytest.fixture
def abstract_socket(monkeypatch):
    """A datagram socket in the abstract namespace, as systemd gives user services."""
    name = f"asyncinf-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def received(sock):
    return sock.recv(4096).decode()


def nothing_waiting(sock):
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    return False


def test_each_message_reaches_a_path_socket(path_socket):
    assert sdnotify.ready()
    assert received(path_socket) == "READY=1"
    assert sdnotify.ready("serving on port 8080")
    assert received(path_socket) == "READY=1\nSTATUS=serving on port 8080"
    assert sdnotify.status("restarting the server (1/3)")
    assert received(path_socket) == "STATUS=restarting the server (1/3)"
    assert sdnotify.stopping()
    assert received(path_socket) == "STOPPING=1"
    assert sdnotify.stopping("client first")
    assert received(path_socket) == "STOPPING=1\nSTATUS=client first"
    assert sdnotify.watchdog()
    assert received(path_socket) == "WATCHDOG=1"
    assert sdnotify.notify("READY=1", "STATUS=x", "MAINPID=1")
    assert received(path_socket) == "READY=1\nSTATUS=x\nMAINPID=1"


def test_abstract_socket(abstract_socket):
    assert sdnotify.notify("READY=1", "STATUS=up")
    assert received(abstract_socket) == "READY=1\nSTATUS=up"


def test_status_newlines_cannot_forge_assignments(path_socket):
    assert sdnotify.status("policy failed\nREADY=1")
    assert received(path_socket) == "STATUS=policy failed READY=1"


def test_unset_is_a_noop(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    assert sdnotify.ready("x") is False
    assert sdnotify.stopping() is False
    assert sdnotify.watchdog() is False
    sdnotify.watchdog_ping()  # the serving loop's hook: returns quietly


@pytest.mark.parametrize("addr", ["/nonexistent/notify", "@asyncinf-nobody-listens", "vsock:2:9"])
def test_send_failure_is_logged_not_raised(monkeypatch, caplog, addr):
    monkeypatch.setenv("NOTIFY_SOCKET", addr)
    with caplog.at_level(logging.DEBUG, logger="asyncinf.runtime.supervise.sdnotify"):
        assert sdnotify.ready() is False
    assert any(r.levelno == logging.DEBUG for r in caplog.records)


def test_a_stream_socket_is_a_send_failure(monkeypatch, caplog):
    directory = tempfile.mkdtemp(prefix="sdn-")
    path = os.path.join(directory, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stream:
        stream.bind(path)
        stream.listen()
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sdnotify.ready() is False
    shutil.rmtree(directory)


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        (None, None, None),
        ("", None, None),
        ("30000000", None, 30.0),
        ("500000", None, 0.5),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
        ("30000000", "ours", 30.0),
        ("30000000", "other", None),  # inherited from a parent the watchdog is meant for
        ("30000000", "garbage", None),
    ],
)
def test_watchdog_interval(monkeypatch, usec, pid, expected):
    pid = {"ours": str(os.getpid()), "other": str(os.getpid() + 1)}.get(pid, pid)
    for key, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    assert sdnotify.watchdog_interval_s() == expected


def test_watchdog_pings_at_a_quarter_of_the_interval(path_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # 2 s: a ping every 0.5 s at most
    clock = ManualClock()
    dog = sdnotify.Watchdog(clock.monotonic)
    assert dog.ping()
    assert received(path_socket) == "WATCHDOG=1"
    clock.advance(0.4)
    assert not dog.ping()
    assert nothing_waiting(path_socket)
    clock.advance(0.1)
    assert dog.ping()
    path_socket.settimeout(2)
    assert received(path_socket) == "WATCHDOG=1"


def test_watchdog_off_sends_nothing(path_socket, monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert not sdnotify.Watchdog(ManualClock().monotonic).ping()
    assert nothing_waiting(path_socket)
