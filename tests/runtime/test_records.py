"""runtime/records.py: dataclasses to JSON and back, refusing what is not of their shape."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field

import pytest

from asyncinf.runtime import records


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Inner:
    p50: float
    count: int = 0


@dataclass(frozen=True)
class Other:
    name: str


@dataclass(frozen=True)
class Outer:
    inner: Inner
    either: Inner | Other
    maybe: float | None
    colour: Colour = Colour.RED
    names: tuple[str, ...] = ()
    by_name: dict[str, Inner] = field(default_factory=dict)
    flag: bool = False


GOOD = Outer(
    Inner(1.5, 2), Other("x"), None, Colour.BLUE, ("a", "b"), {"k": Inner(0.25)}, flag=True
)


def test_a_record_survives_json_and_an_int_where_a_float_is_declared_stays_as_written():
    text = json.dumps(records.to_json(GOOD))
    assert records.from_json(Outer, json.loads(text)) == GOOD
    data = records.to_json(GOOD)
    data["inner"]["p50"] = 3
    assert json.dumps(records.to_json(records.from_json(Outer, data))) == json.dumps(data)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d.pop("inner"), "Outer.inner: missing"),
        (lambda d: d.update(colour_of_sky=1), "Outer.colour_of_sky: not a field of Outer"),
        (lambda d: d["inner"].update(p50="fast"), "Outer.inner.p50='fast': expected a number"),
        (lambda d: d["inner"].update(count=True), "Outer.inner.count=True: expected an integer"),
        (lambda d: d["inner"].update(count=1.5), "Outer.inner.count=1.5: expected an integer"),
        (lambda d: d.update(colour="green"), "Outer.colour='green': expected one of"),
        (lambda d: d.update(names="ab"), "Outer.names='ab': expected a list"),
        (lambda d: d["by_name"]["k"].update(p50=None), "Outer.by_name.k.p50=None: expected"),
        (lambda d: d.update(either={"nick": 1}), "Outer.either={'nick': 1}: none of Inner or"),
        (lambda d: d.update(flag=1), "Outer.flag=1: expected bool"),
        (lambda d: d.update(inner=[1.5]), "Outer.inner=[1.5]: expected a map of Inner's fields"),
    ],
)
def test_what_is_not_of_the_shape_is_refused_naming_the_field(change, says):
    data = records.to_json(GOOD)
    change(data)
    with pytest.raises(ValueError, match=re.escape(says)):
        records.from_json(Outer, data)
