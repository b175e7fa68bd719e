import threading

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction

from controlplane import append_only, audit
from controlplane.audit import Entry, ObjectRef, chain_hash, record, record_many, verify_chain
from controlplane.canonical import digest
from controlplane.models import GENESIS_HASH, AuditEvent

pytestmark = pytest.mark.django_db
LEDGER = AuditEvent._meta.db_table


def _append(count: int, actor: str = "user:alice", **kwargs) -> list[AuditEvent]:
    return [
        record(actor, "thing.changed", ObjectRef("thing", str(n)), {"n": n, "note": "é"}, **kwargs)
        for n in range(count)
    ]


def _tamper(sql: str, params: list) -> None:
    """Change a row behind the application's back, the way someone with database access could."""
    append_only.remove(connection, LEDGER)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    append_only.install(connection, LEDGER)


def test_events_form_a_linear_chain_from_genesis():
    events = _append(3, trace_id="ab" * 16, run_id="r-1")

    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[1].prev_hash == events[0].hash
    assert events[2].prev_hash == events[1].hash
    assert len({e.hash for e in events}) == 3
    assert verify_chain().as_dict() == {"ok": True, "checked": 3, "first_bad": None, "reason": ""}


def test_several_events_are_appended_in_one_insert_and_chain_like_single_ones(
    django_assert_num_queries,
):
    first = record("user:alice", "thing.created", ObjectRef("thing", "1"), {"n": 1})
    entries = [
        Entry("system:worker", "thing.changed", ObjectRef("thing", "1"), {"n": 2}, run_id="r-1"),
        Entry("system:worker", "thing.finished", ObjectRef("thing", "1"), {"n": 3}, run_id="r-1"),
    ]

    # PostgreSQL: one function call takes the lock, reads the head and inserts; SQLite: head, INSERT.
    with django_assert_num_queries(1 if connection.vendor == "postgresql" else 2):
        events = record_many(entries)

    assert [e.seq for e in events] == [2, 3] and events[0].prev_hash == first.hash
    assert events[1].prev_hash == events[0].hash and events[0].created_at == events[1].created_at
    stored = list(AuditEvent.objects.filter(seq__gt=1).values_list("action", "run_id", "payload"))
    assert stored == [("thing.changed", "r-1", {"n": 2}), ("thing.finished", "r-1", {"n": 3})]
    assert verify_chain().as_dict() == {"ok": True, "checked": 3, "first_bad": None, "reason": ""}


def test_event_records_who_what_and_context():
    event = record(
        "user:alice key:1234abcd",
        "run.created",
        ObjectRef("runs.run", "r-9"),
        {"a": 1},
        trace_id="cd" * 16,
        run_id="r-9",
        release_id="rel-1",
    )
    event.refresh_from_db()

    assert (event.actor, event.action, event.object_type, event.object_id) == (
        "user:alice key:1234abcd",
        "run.created",
        "runs.run",
        "r-9",
    )
    assert (event.trace_id, event.run_id, event.release_id) == ("cd" * 16, "r-9", "rel-1")
    assert event.created_at is not None


def test_database_refuses_update_and_delete():
    _append(2)

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(seq=1).update(actor="user:mallory")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(seq=2).delete()

    assert verify_chain().ok
    assert AuditEvent.objects.count() == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="TRUNCATE is PostgreSQL's")
def test_database_refuses_truncate():
    _append(1)
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(f"TRUNCATE {LEDGER}")


@pytest.mark.parametrize(
    ("sql", "params", "first_bad", "checked", "reason"),
    [
        ("UPDATE controlplane_auditevent SET actor = %s WHERE seq = 2", ["user:mallory"], 2, 1, "hash"),
        (
            "UPDATE controlplane_auditevent SET payload = %s WHERE seq = 3",
            ['{"n": 99, "note": "é"}'],
            3,
            2,
            "digest",
        ),
        ("DELETE FROM controlplane_auditevent WHERE seq = 2", [], 3, 1, "gap"),
        ("UPDATE controlplane_auditevent SET prev_hash = %s WHERE seq = 4", ["f" * 64], 4, 3, "link"),
        (  # #2 and #3 swap places
            "UPDATE controlplane_auditevent SET seq = 1000 WHERE seq = 2; "
            "UPDATE controlplane_auditevent SET seq = 2 WHERE seq = 3; "
            "UPDATE controlplane_auditevent SET seq = 3 WHERE seq = 1000",
            [],
            2,
            1,
            "link",
        ),
    ],
    ids=[
        "edited-field",
        "edited-payload",
        "deleted-event",
        "relinked-event",
        "reordered-events",
    ],
)
def test_tampering_behind_the_apps_back_is_found(sql, params, first_bad, checked, reason):
    _append(5)
    assert verify_chain().ok

    for statement in sql.split("; "):
        _tamper(statement, params)

    result = verify_chain()
    assert not result.ok
    assert result.first_bad == first_bad
    assert reason in result.reason
    assert result.checked == checked


def test_a_quote_cannot_be_passed_off_as_a_backslash_and_a_quote():
    """The canonical form escapes `"` as `\\"`: an actor edited from `a"b` to `a\\"b` must not
    write the same bytes as the original."""
    _append(2)
    _append(1, actor='user:a"b')
    _append(2)

    _tamper("UPDATE controlplane_auditevent SET actor = %s WHERE seq = 3", ['user:a\\"b'])

    result = verify_chain()
    assert (result.ok, result.first_bad, result.reason) == (False, 3, "event fields do not match its hash")


def test_an_inserted_event_with_a_valid_hash_breaks_the_next_link():
    events = _append(4)
    forged = AuditEvent(
        seq=3,
        created_at=events[1].created_at,
        actor="user:mallory",
        action="thing.changed",
        object_type="thing",
        object_id="forged",
        payload={},
        payload_digest=digest({}),
        prev_hash=events[1].hash,
    )
    forged.hash = chain_hash(forged.prev_hash, forged)
    for seq in (4, 3):  # make room: #3 and #4 move up one
        _tamper("UPDATE controlplane_auditevent SET seq = seq + 1 WHERE seq = %s", [seq])
    forged.save(force_insert=True)

    assert verify_chain().as_dict() == {
        "ok": False,
        "checked": 3,
        "first_bad": 4,
        "reason": "link to the previous event is broken",
    }


def test_tampering_with_payload_digest_and_hash_together_breaks_the_next_link():
    events = _append(3)
    forged_digest = "a" * 64
    _tamper(
        "UPDATE controlplane_auditevent SET payload_digest = %s, hash = %s WHERE seq = 2",
        [forged_digest, "b" * 64],
    )

    result = verify_chain()
    assert not result.ok and result.first_bad == 2
    assert events  # the original chain was intact before the forgery


def test_audit_verify_command_reports_and_fails_on_a_broken_chain(capsys):
    _append(2)
    call_command("audit_verify")
    assert '"ok": true' in capsys.readouterr().out

    _tamper("UPDATE controlplane_auditevent SET action = %s WHERE seq = 1", ["thing.hidden"])
    with pytest.raises(CommandError, match="broken at event #1"):
        call_command("audit_verify")
    assert '"first_bad": 1' in capsys.readouterr().out


@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrent writers need PostgreSQL")
@pytest.mark.usefixtures("committed_db")
def test_chain_stays_linear_under_concurrent_writers():
    writers, events_each = 8, 25
    start = threading.Barrier(writers)
    errors = []

    def write(worker: int) -> None:
        try:
            start.wait()
            for n in range(events_each):
                with transaction.atomic():
                    record(f"system:writer-{worker}", "load.test", ObjectRef("writer", str(worker)), {"n": n})
        except Exception as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, writers * events_each + 1))
    prev_hashes = list(AuditEvent.objects.values_list("prev_hash", flat=True))
    assert len(set(prev_hashes)) == len(prev_hashes), "two events share a parent: the chain forked"
    assert verify_chain().as_dict() == {
        "ok": True,
        "checked": writers * events_each,
        "first_bad": None,
        "reason": "",
    }
    times = list(AuditEvent.objects.order_by("seq").values_list("created_at", flat=True))
    assert times == sorted(times), "the database clock must order events as the chain does"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="two connections need PostgreSQL")
@pytest.mark.usefixtures("committed_db")
@pytest.mark.parametrize(
    ("sql", "params", "result"),
    [
        ("", [], {"ok": True, "checked": 50, "first_bad": None, "reason": ""}),
        (
            "UPDATE controlplane_auditevent SET action = %s WHERE seq = 25",
            ["thing.hidden"],
            {"ok": False, "checked": 24, "first_bad": 25, "reason": "event fields do not match its hash"},
        ),
        (
            "UPDATE controlplane_auditevent SET prev_hash = %s WHERE seq = 26",
            ["f" * 64],
            {"ok": False, "checked": 25, "first_bad": 26, "reason": "link to the previous event is broken"},
        ),
        (
            "DELETE FROM controlplane_auditevent WHERE seq = 25",
            [],
            {"ok": False, "checked": 24, "first_bad": 26, "reason": "sequence gap: expected #25"},
        ),
        (
            "UPDATE controlplane_auditevent SET payload = '{}' WHERE seq = 40",
            [],
            {"ok": False, "checked": 39, "first_bad": 40, "reason": "payload does not match its digest"},
        ),
        (
            "UPDATE controlplane_auditevent SET actor = %s WHERE seq = 3",
            ["user:mallory"],
            {"ok": False, "checked": 2, "first_bad": 3, "reason": "event fields do not match its hash"},
        ),
    ],
    ids=[
        "intact",
        "edited-middle",
        "relinked-after-middle",
        "deleted-middle",
        "edited-second-half",
        "edited-first-half",
    ],
)
def test_a_long_chain_checked_in_two_halves_gives_the_answer_of_one_walk(monkeypatch, sql, params, result):
    """Outside a transaction a chain of two batches or more is walked in two halves, on two
    connections; the second half starts from the hash stored at the middle (#25 here)."""
    monkeypatch.setattr(audit, "_VERIFY_BATCH", 10)
    _append(50)
    if sql:
        _tamper(sql, params)
    seen = []

    assert verify_chain(progress=seen.append).as_dict() == result
    if result["ok"]:
        assert (
            sorted(seen) == seen and seen[-1] == 50 and len(seen) == 6
        )  # batches of 10, the middle one split
