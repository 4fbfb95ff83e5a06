from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional

import pytest

from warren_step import DecodeError, decode, schema_of


@dataclass
class Inner:
    name: str


@dataclass
class Params:
    """How to count."""

    top: int = 10
    ratio: float = 0.5
    lowercase: bool = True
    mode: Literal["words", "chars"] = "words"
    stop_words: List[str] = field(default_factory=list)
    limit: Optional[int] = None
    weights: Dict[str, float] = field(default_factory=dict)
    column: str = field(default="text", metadata={"doc": "Which column holds the text."})


@dataclass
class Needs:
    source: str
    inner: Inner


def test_the_schema_has_types_defaults_and_no_unknown_keys() -> None:
    s = schema_of(Params)
    assert s["type"] == "object" and s["additionalProperties"] is False
    p = s["properties"]
    assert p["top"] == {"type": "integer", "default": 10}
    assert p["ratio"] == {"type": "number", "default": 0.5}
    assert p["lowercase"] == {"type": "boolean", "default": True}
    assert p["mode"] == {"type": "string", "enum": ["words", "chars"], "default": "words"}
    assert p["stop_words"] == {"type": "array", "items": {"type": "string"}, "default": []}
    assert p["limit"] == {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None}
    assert p["weights"]["additionalProperties"] == {"type": "number"}
    assert p["column"]["description"] == "Which column holds the text."
    assert "required" not in s
    assert s["description"] == "How to count."
    needs = schema_of(Needs)
    assert needs["required"] == ["source", "inner"]
    assert needs["properties"]["inner"]["properties"]["name"] == {"type": "string"}


def test_a_literal_has_the_type_of_its_values_when_they_share_one() -> None:
    @dataclass
    class Choices:
        level: Literal[1, 2, 3] = 1
        flag: Literal[True] = True
        mixed: Literal["auto", 0] = "auto"

    p = schema_of(Choices)["properties"]
    assert p["level"]["type"] == "integer"
    assert p["flag"]["type"] == "boolean"
    assert "type" not in p["mixed"] and p["mixed"]["enum"] == ["auto", 0]


def test_decode_fills_defaults_and_checks_types() -> None:
    p = decode(Params, {"top": 3, "ratio": 1, "stop_words": ["a"]})
    assert p == Params(top=3, ratio=1.0, stop_words=["a"])
    assert isinstance(p.ratio, float)
    assert decode(Params, None) == Params()
    assert decode(Needs, {"source": "s", "inner": {"name": "n"}}).inner == Inner("n")


@pytest.mark.parametrize(
    "value, named",
    [
        ({"top": "3"}, "top: expected an integer"),
        ({"top": True}, "top: expected an integer"),
        ({"lowercase": 1}, "lowercase: expected true or false"),
        ({"mode": "lines"}, "mode: 'lines' is not one of"),
        ({"stop_words": ["a", 2]}, "stop_words[1]: expected a string"),
        ({"tpo": 3}, "tpo: no such field"),
        ([1, 2], "expected a map"),
    ],
)
def test_a_bad_value_names_its_field(value: object, named: str) -> None:
    with pytest.raises(DecodeError, match=None) as e:
        decode(Params, value)
    assert named in str(e.value)


def test_a_missing_required_field_is_named() -> None:
    with pytest.raises(DecodeError) as e:
        decode(Needs, {"source": "s"})
    assert "inner: missing" in str(e.value)


def test_payloads_may_carry_fields_the_step_does_not_declare() -> None:
    with pytest.raises(DecodeError):
        decode(Needs, {"source": "s", "inner": {"name": "n"}, "added_later": 1})
    needs = decode(Needs, {"source": "s", "inner": {"name": "n", "also": 2}, "added_later": 1}, strict=False)
    assert needs == Needs(source="s", inner=Inner("n"))
