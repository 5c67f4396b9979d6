"""How an action already queued for a timestep is blended with a newer chunk's action for it.

Custom functions register by name (`register_aggregate`) or are given as "module:function".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from asyncinf.runtime.errors import ConfigError

AggregateFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

AGGREGATES: dict[str, AggregateFn] = {
    "weighted_average": lambda old, new: 0.3 * old + 0.7 * new,
    "latest_only": lambda old, new: new,
    "average": lambda old, new: 0.5 * old + 0.5 * new,
    "conservative": lambda old, new: 0.7 * old + 0.3 * new,
}


def register_aggregate(name: str, fn: AggregateFn) -> None:
    """Make `fn(old [K, A], new [K, A]) -> [K, A]` available as `--aggregate_fn_name=name`."""
    AGGREGATES[name] = fn


def get_aggregate(name: str) -> AggregateFn:
    if name in AGGREGATES:
        return AGGREGATES[name]
    module, sep, attr = name.partition(":")
    if sep:
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--aggregate_fn_name={name!r}: cannot import it ({exc})") from None
    raise ConfigError(
        f"--aggregate_fn_name={name!r} is not known; choose one of {sorted(AGGREGATES)} "
        "or give 'module:function'"
    )
