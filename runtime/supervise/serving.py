"""The one way a policy server runs, whether `asyncinf serve` or `up --local`'s server worker.

Load (and warm up) the preloaded policy first: a load failure is a boot error (exit code
POLICY_LOAD_ERROR, no restart loop), reported through `fail`. Then open the transport, say
ready, and serve sessions until `should_stop`.
"""

from __future__ import annotations

from collections.abc import Callable

from asyncinf.runtime.server import PolicyCache, PolicyServer
from asyncinf.runtime.supervise.exitcodes import ExitCode
from asyncinf.runtime.supervise.specs import ServerSpec
from asyncinf.transports.base import ServerTransport
from asyncinf.transports.factory import open_server


def serve_policy(
    spec: ServerSpec,
    *,
    on_ready: Callable[[ServerTransport, PolicyCache], None],
    on_beat: Callable[[PolicyServer], None],
    should_stop: Callable[[], bool],
    fail: Callable[[ExitCode, str], int],
) -> int:
    """Returns the exit code: OK after a stop, or what `fail` returned."""
    cache = PolicyCache(spec.server.max_policies)
    if spec.preload is not None:
        failure = cache.preload(spec.preload)
        if failure is not None:
            return fail(ExitCode.POLICY_LOAD_ERROR, f"policy load failed: {failure}")
    with open_server(spec.transport) as transport:
        on_ready(transport, cache)
        server = PolicyServer(cache, spec.server, on_beat=lambda: on_beat(server))
        server.serve(transport, should_stop=should_stop)
    return int(ExitCode.OK)
