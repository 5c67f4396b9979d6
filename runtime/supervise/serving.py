"""The one way a policy server runs, whether `asyncinf serve` or `up --local`'s server worker.

Open the transport first, NOT_SERVING (its health service, where it has one, tells probes
so, and new sessions are refused retryably), then load (and warm up) the preloaded policy:
a load failure is a boot error (exit code POLICY_LOAD_ERROR, no restart loop), a bad option
or an address that cannot be bound is CONFIG_ERROR, both reported through `fail`. Then mark
it SERVING, say ready, and serve sessions until `should_stop`.

Drain: once `should_stop()`, the transport reports NOT_SERVING and takes no new session;
the current one goes on for up to `drain_timeout_s` (or until `hurry()`), then its client is
told goodbye ("reconnect to another replica") and serving ends; with no session, at once.
When `take_attach` hands over another transport (the supervisor recovering a stalled
session on a new shared-memory generation), the current session ends and serving goes on
there, with the policy still loaded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.server import PolicyCache, PolicyServer
from asyncinf.runtime.supervise.exitcodes import ExitCode
from asyncinf.runtime.supervise.specs import ServerSpec
from asyncinf.transports.base import ServerTransport, SessionEvents
from asyncinf.transports.factory import TransportSpec, open_server

log = logging.getLogger(__name__)


def serve_policy(
    spec: ServerSpec,
    *,
    on_ready: Callable[[ServerTransport, PolicyCache], None],
    on_beat: Callable[[PolicyServer], None],
    should_stop: Callable[[], bool],
    fail: Callable[[ExitCode, str], int],
    take_attach: Callable[[], TransportSpec | None] = lambda: None,
    drain_timeout_s: float = 0.0,
    hurry: Callable[[], bool] = lambda: False,
    events: SessionEvents | None = None,
) -> int:
    """Returns the exit code: OK after a stop, or what `fail` returned."""
    cache = PolicyCache(spec.server.max_policies)
    try:
        transport = open_server(spec.transport)
    except ConfigError as exc:  # an address that cannot be bound, a bad transport option
        return fail(ExitCode.CONFIG_ERROR, str(exc))
    if events is not None:  # metrics: told about every session of every transport
        transport.events = events
    transport.set_serving(False)  # until the policy is loaded and warmed up
    server = PolicyServer(cache, spec.server, on_beat=lambda: on_beat(server))
    pending: TransportSpec | None = None
    drain_until: float | None = None

    def stop_or_move() -> bool:
        nonlocal pending, drain_until
        if should_stop():
            if drain_until is None:
                drain_until = time.monotonic() + drain_timeout_s
                transport.drain()
                if server.in_session and drain_timeout_s > 0:
                    log.info("draining: the session may go on for %g s", drain_timeout_s)
            return hurry() or not server.in_session or time.monotonic() >= drain_until
        pending = pending or take_attach()
        return pending is not None

    with transport:
        code = _preload(spec, cache, should_stop, fail)
        if code is not None:
            return code
        transport.set_serving(True)
        on_ready(transport, cache)
        server.serve(transport, should_stop=stop_or_move)
    while pending is not None and not should_stop():
        target, pending = pending, None
        log.info("serving on %s from now on", getattr(target.options, "name", "") or target.kind)
        transport = open_server(target)
        if events is not None:
            transport.events = events
        with transport:
            server.serve(transport, should_stop=stop_or_move)
    return int(ExitCode.OK)


def _preload(
    spec: ServerSpec,
    cache: PolicyCache,
    should_stop: Callable[[], bool],
    fail: Callable[[ExitCode, str], int],
) -> int | None:
    """Load the preloaded policy; an exit code when serving should not start."""
    try:
        if spec.preload is not None and not should_stop():
            failure = cache.preload(spec.preload)
            if failure is not None:
                return fail(ExitCode.POLICY_LOAD_ERROR, f"policy load failed: {failure}")
    except ConfigError as exc:  # a bad --policy.* value
        return fail(ExitCode.CONFIG_ERROR, str(exc))
    if should_stop():  # stopped while the policy loaded: nothing to serve
        return int(ExitCode.OK)
    return None
