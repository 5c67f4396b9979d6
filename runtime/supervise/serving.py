"""The one way a policy server runs, whether `asyncinf serve` or `up --local`'s server worker.

Load (and warm up) the preloaded policy first: a load failure is a boot error (exit code
POLICY_LOAD_ERROR, no restart loop), a bad option or an address that cannot be bound is
CONFIG_ERROR, both reported through `fail`. Then open the transport, say ready, and serve
sessions until `should_stop`. When `take_attach` hands over another transport (the
supervisor recovering a stalled session on a new shared-memory generation), the current
session ends and serving goes on there, with the policy still loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from asyncinf.runtime.errors import ConfigError
from asyncinf.runtime.server import PolicyCache, PolicyServer
from asyncinf.runtime.supervise.exitcodes import ExitCode
from asyncinf.runtime.supervise.specs import ServerSpec
from asyncinf.transports.base import ServerTransport
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
) -> int:
    """Returns the exit code: OK after a stop, or what `fail` returned."""
    cache = PolicyCache(spec.server.max_policies)
    try:
        if spec.preload is not None and not should_stop():
            failure = cache.preload(spec.preload)
            if failure is not None:
                return fail(ExitCode.POLICY_LOAD_ERROR, f"policy load failed: {failure}")
        if should_stop():  # stopped while the policy loaded: nothing to serve
            return int(ExitCode.OK)
        transport = open_server(spec.transport)
    except ConfigError as exc:  # a bad --policy.* value, an address that cannot be bound
        return fail(ExitCode.CONFIG_ERROR, str(exc))
    server = PolicyServer(cache, spec.server, on_beat=lambda: on_beat(server))
    pending, ready = None, False

    def stop_or_move() -> bool:
        nonlocal pending
        pending = pending or take_attach()
        return should_stop() or pending is not None

    while True:
        with transport:
            if not ready:
                on_ready(transport, cache)
                ready = True
            server.serve(transport, should_stop=stop_or_move)
        if should_stop() or pending is None:
            return int(ExitCode.OK)
        target, pending = pending, None
        log.info("serving on %s from now on", target.options.get("name", target.kind))
        transport = open_server(target)
