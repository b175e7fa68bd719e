"""The compiled envelope check answers exactly as the reference validator, which explains refusals."""

from runs.engine.envelope import ENVELOPE_ACCEPTS, ENVELOPE_VALIDATOR, envelope_problems
from tests.support.documents import variants

ENVELOPE = {
    "envelope_version": 1,
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "task_id": "5b0c4c9e-7a4e-4b8e-9a52-0c8f3a1d2e4f",
    "run_id": "5b0c4c9e-7a4e-4b8e-9a52-0c8f3a1d2e4f",
    "workflow": "support_triage",
    "workflow_version": "3",
    "release_id": "rel_4f2a",
    "case_id": "case-1042",
    "original_input": {"message": "refund please", "amount": 40},
    "intent": "refund",
    "classification": None,
    "confidence": 0.92,
    "sensitivity": "internal",
    "deadline": "2026-11-21T12:00:00+00:00",
    "budget": {"tokens": 4000, "tool_calls": 5, "cost_usd": 0.5},
    "spent": {"tokens": 120},
    "hop_count": 2,
    "allowed_actions": ["refund", "escalate"],
    "approval_conditions": ["amount > 100"],
    "results": {"classify": {"intent": "refund"}},
    "state": "refund",
    "source_agent": "triage_agent",
    "target_agent": None,
    "branch": {"index": 0, "item": {"order": 7}},
}


def test_the_compiled_check_agrees_with_the_validator_on_every_variant():
    documents = list(variants(ENVELOPE))
    assert len(documents) > 500
    assert [doc for doc in documents if ENVELOPE_ACCEPTS(doc) != ENVELOPE_VALIDATOR.is_valid(doc)] == []
    assert any(not ENVELOPE_ACCEPTS(doc) for doc in documents)


def test_a_refused_envelope_is_explained_by_path():
    assert envelope_problems(ENVELOPE) == []
    assert envelope_problems({**ENVELOPE, "hop_count": -1}) == ["hop_count: -1 is less than the minimum of 0"]
