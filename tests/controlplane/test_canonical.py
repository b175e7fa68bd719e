"""canonical_json writes exactly what RFC 8785 specifies, on its fast path and off it."""

import random

import pytest
import rfc8785

from controlplane.canonical import CanonicalizationError, canonical_json, digest

# Strings that exercise every escape RFC 8785 takes from JavaScript, and the ones it leaves.
AWKWARD_TEXT = [
    "",
    "plain",
    '"quoted" and \\back\\slashed',
    "\b\f\n\r\t",
    "\x00\x01\x1f",
    "\x7f delete stays",
    "é € 😀 non-ASCII stays",
    "\u2028\u2029 line separators stay",
    "<script>alert(1)</script>",
]

# Where Python's float repr and JavaScript's Number-to-string part ways, and where they agree.
FLOATS = [0.1, 1.0, -0.0, 2.5, 1e21, 1e20, 1e16, 1e15 + 0.5, 1e-7, 1e-6, 1e-5, 0.0001, 123.456, 5e-324]
FLOATS += [1.7976931348623157e308, -1234.5678, 0.30000000000000004, 1795279816.713267]
KEYS = ["a", "B", "z", "_", "10", "9", "é", "ü", "€", "😀", "\ufb01", "a\x00"]


def random_document(rng: random.Random, depth: int = 0):
    kinds = ["text", "int", "bool", "null", "float", "big"] + (["list", "dict"] if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "text":
        return rng.choice(AWKWARD_TEXT) + "".join(
            chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(4))
        )
    if kind == "int":
        return rng.randrange(-(2**53) + 1, 2**53)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "float":
        return rng.choice([*FLOATS, rng.uniform(-1e6, 1e6), rng.uniform(0, 1e-3), 1.7e9 + rng.random()])
    if kind == "big":
        return rng.choice([2**53 - 1, -(2**53) + 1, 0])
    if kind == "list":
        return [random_document(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = [
        rng.choice(["a", "B", "z", "_", "10", "9", "é", "ü", "€", "😀", "\ufb01", "a\x00"]) for _ in range(4)
    ]
    return {key: random_document(rng, depth + 1) for key in keys}


def test_it_writes_the_same_bytes_as_the_reference_implementation():
    rng = random.Random(8785)
    for _ in range(3000):
        document = random_document(rng)
        assert canonical_json(document) == rfc8785.dumps(document), document


@pytest.mark.parametrize("text", AWKWARD_TEXT)
def test_each_string_escape_matches(text):
    assert canonical_json({"k": text, "list": [text]}) == rfc8785.dumps({"k": text, "list": [text]})


def test_keys_beyond_the_basic_plane_sort_by_utf16_code_units():
    # U+1F600 is a surrogate pair in UTF-16, which sorts before U+FB01; by code point it would not.
    document = {"\U0001f600": 1, "\ufb01": 2}
    assert canonical_json(document) == rfc8785.dumps(document)
    assert canonical_json(document).index("😀".encode()) < canonical_json(document).index("\ufb01".encode())


@pytest.mark.parametrize("value", [2**53, -(2**53), {"k": "\ud800"}, {1: "integer key"}, float("nan")])
def test_what_rfc_8785_cannot_represent_is_refused_as_before(value):
    with pytest.raises(CanonicalizationError):
        rfc8785.dumps(value)
    with pytest.raises(CanonicalizationError):
        canonical_json(value)


def test_subclasses_of_plain_types_are_written_by_value():
    class Label(str):
        pass

    assert digest({"state": Label("done")}) == digest({"state": "done"})
