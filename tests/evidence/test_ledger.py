"""Signed checkpoints of the chain's head: what the hash links alone cannot show."""

import pytest
from django.db import connection

from controlplane import append_only
from controlplane.audit import ObjectRef, chain_hash, record
from controlplane.identity import Actor
from controlplane.models import AuditEvent
from evidence.models import AuditCheckpoint
from evidence.services import audit_checkpoint, ledger_status

pytestmark = pytest.mark.django_db
SYSTEM = Actor("tester", kind="system")


def append(count: int) -> None:
    for number in range(count):
        record(SYSTEM, "test.event", ObjectRef("thing", str(number)), {"n": number})


def test_an_intact_ledger_verifies_against_its_checkpoints():
    append(5)
    first = audit_checkpoint()
    assert audit_checkpoint() == first  # nothing appended since: no new checkpoint
    append(3)
    second = audit_checkpoint()
    assert (first.seq, second.seq) == (5, 8)
    status = ledger_status()
    assert status.ok and status.chain.checked == 8 and status.checkpoints_checked == 2
    assert status.last_checkpoint == second


def test_an_empty_ledger_has_nothing_to_checkpoint():
    assert audit_checkpoint() is None and ledger_status().ok


def test_a_truncated_tail_is_detected_by_the_last_checkpoint():
    append(6)
    audit_checkpoint()
    append_only.remove(connection, "controlplane_auditevent")
    try:
        AuditEvent.objects.filter(seq__gte=5).delete()  # the chain's links still hold: 1..4
    finally:
        append_only.install(connection, "controlplane_auditevent")
    status = ledger_status()
    assert status.chain.ok  # the links alone cannot tell
    assert (
        not status.ok and "event #6" in status.checkpoint_problem and "truncated" in status.checkpoint_problem
    )


def test_a_rewritten_tail_is_detected_by_the_checkpoint():
    append(4)
    checkpoint = audit_checkpoint()
    append_only.remove(connection, "controlplane_auditevent")
    try:
        AuditEvent.objects.filter(seq=4).delete()
        record(SYSTEM, "test.event", ObjectRef("thing", "forged"), {"n": "forged"})  # a new, valid #4
    finally:
        append_only.install(connection, "controlplane_auditevent")
    status = ledger_status()
    assert status.chain.ok and not status.ok
    signed_at = checkpoint.created_at.isoformat(timespec="seconds")
    assert status.checkpoint_problem == f"event #4 differs from the checkpoint signed at {signed_at}"


def test_a_forged_checkpoint_signature_is_detected():
    append(2)
    checkpoint = audit_checkpoint()
    AuditCheckpoint.objects.create(
        seq=checkpoint.seq,
        head_hash=checkpoint.head_hash,
        created_at=checkpoint.created_at,
        reason="interval",
        key_id=checkpoint.key_id,
        signature=checkpoint.signature[:-4] + "AAA=",
    )
    assert "invalid signature" in ledger_status().checkpoint_problem


def test_checkpoints_are_append_only():
    append(1)
    checkpoint = audit_checkpoint()
    with pytest.raises(Exception, match="append-only"):
        AuditCheckpoint.objects.filter(pk=checkpoint.pk).update(seq=99)


TRICKY = ['quote " backslash \\ slash /', "tab\tnew\nline\r\x08\x0c\x01\x1f\x7f", "é ü ß 中文 😀 \u2028"]


@pytest.mark.postgres
def test_the_database_rebuilds_every_events_canonical_json_byte_for_byte():
    """Plain concatenation for fields that need no escaping, to_json for the others: both write
    what chain_hash hashes, and the append function hashed the same bytes."""
    from controlplane.audit import _hashed
    from controlplane.ledger_sql import VERIFY_BATCH

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only")
    record(
        SYSTEM,
        "test.plain",
        ObjectRef("thing", "1"),
        {"n": 1},
        trace_id="ab" * 16,
        run_id="r-1",
        release_id="rel",
    )
    for text in TRICKY:
        record(Actor(text, kind="user"), "test.tricky", ObjectRef(text, text), {text: [text, 1, None, True]},
               trace_id="t", run_id=text, release_id=text)  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(VERIFY_BATCH, [0, 100])
        written = [bytes(row[-1]) for row in cursor.fetchall()]
    events = list(AuditEvent.objects.order_by("seq"))
    assert written == [_hashed(event.prev_hash, event) for event in events]
    assert [event.hash for event in events] == [chain_hash(event.prev_hash, event) for event in events]
    assert ledger_status().chain.checked == 1 + len(TRICKY)


def test_verification_reports_progress_and_the_first_edited_event():
    from controlplane.audit import verify_chain

    append(4)
    seen = []
    assert verify_chain(progress=seen.append).ok and seen == [4]
    append_only.remove(connection, "controlplane_auditevent")
    try:
        AuditEvent.objects.filter(seq=3).update(actor="user:mallory")
    finally:
        append_only.install(connection, "controlplane_auditevent")
    result = verify_chain()
    assert (result.ok, result.first_bad, result.checked) == (False, 3, 2)
    assert result.reason == "event fields do not match its hash"


def test_the_verify_command_reports_progress(capsys):
    from django.core.management import call_command

    append(3)
    call_command("audit_verify", "--progress")
    captured = capsys.readouterr()
    assert '"checked": 3' in captured.out and "verified 3 events" in captured.err
