"""The compiled input and result checks answer exactly as the reference JSON Schema validator.

Every decision runs the compiled check; jsonschema only explains refusals. So the two must
agree on every document: the realistic inputs of each decision point, and every variant of
them with one field removed, given a value of another type, or joined by an unknown field.
"""

import pytest

from policy.decision_points import POINTS, RESULT_ACCEPTS, RESULT_VALIDATOR, compile_schema
from tests.support.documents import variants

from .test_default_bundle import CASES, document


@pytest.mark.parametrize("case", list(CASES))
def test_input_check_agrees_with_jsonschema_on_every_variant(case):
    point, fields, _ = CASES[case]
    definition = POINTS[point]
    documents = list(variants(document(point, **fields)))
    disagreements = [
        doc for doc in documents if definition.accepts(doc) != definition.validator.is_valid(doc)
    ]
    assert len(documents) > 100
    assert disagreements == []
    assert any(not definition.accepts(doc) for doc in documents)


def test_result_check_agrees_with_jsonschema_on_every_variant():
    result = {
        "allow": True,
        "require_approval": True,
        "reasons": ["crm.refund is irreversible"],
        "approvers": ["reviewer"],
        "quorum": 1,
        "obligations": {"notify": "owner"},
    }
    documents = [*variants(result), {**result, "quorum": 0}, {**result, "quorum": 2.0}, "allow"]
    assert [doc for doc in documents if RESULT_ACCEPTS(doc) != RESULT_VALIDATOR.is_valid(doc)] == []
    assert RESULT_ACCEPTS(result) and not RESULT_ACCEPTS({**result, "quorum": 0})


@pytest.mark.parametrize(
    ("schema", "value", "valid"),
    [
        ({"type": "integer"}, 2.0, True),
        ({"type": "integer"}, True, False),
        ({"type": "number"}, False, False),
        ({"const": 1}, 1.0, True),
        ({"const": 1}, True, False),
        ({"enum": ["read"]}, "read", True),
        ({"type": ["number", "null"]}, None, True),
        ({"type": "object", "additionalProperties": False}, {"x": 1}, False),
        ({"type": "object", "additionalProperties": {"enum": ["read"]}}, {"kb": "write"}, False),
        ({"type": "array", "items": {"type": "string"}}, ["a", 1], False),
    ],
)
def test_compiled_checks_follow_json_schema_semantics(schema, value, valid):
    assert compile_schema(schema)(value) is valid
