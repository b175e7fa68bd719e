"""Audit ledger: append rate against a bare INSERT+COMMIT, and verification rate of a long chain.

Append: events appended one per transaction through `controlplane.audit.record` (advisory
lock, head and clock read, insert, commit), beside single-row INSERT+COMMIT into a plain
table of the same shape on the same database, in alternating blocks so that both see the
same load. Verify: a chain of --events events (1,000,000 by default, written with COPY) is
walked by `verify_chain()` link by link, recomputing every payload digest and event hash (two
connections at once, as the command and the API do outside a transaction). Figures depend on
what else the machine runs: the load average is printed beside them.

Targets (issue "Evidence, replay and observability"): append at least 0.5x the bare insert
rate; verification over 200,000 events/s. Needs PostgreSQL: a throwaway database
`baton_audit_<pid>` is created (like bench/chaos.py), migrated and dropped at the end.

    .venv/bin/python bench/audit_bench.py [--appends 3000] [--events 1000000]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _databases import create_database, drop_database, postgres_url

ROOT = Path(__file__).resolve().parent.parent
TARGET_APPEND_RATIO = 0.5
TARGET_VERIFY_RATE = 200_000
BLOCK = 250
COPY_COLUMNS = (
    "seq", "created_at", "actor", "action", "object_type", "object_id", "trace_id", "run_id",
    "release_id", "payload", "payload_digest", "prev_hash", "hash",
)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--appends", type=int, default=3000)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    database = f"baton_audit_{os.getpid()}"
    os.environ["DATABASE_URL"] = postgres_url(database)
    create_database(database)
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=True)
        import _setup  # noqa: F401  (Django set-up, on the database above)

        append_ratio = measure_appends(args.appends)
        verify_rate = measure_verification(args.events)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database(database)
    print("load average (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    print(f"targets: append >= {TARGET_APPEND_RATIO}x bare insert, verify >= {TARGET_VERIFY_RATE:,} events/s")
    print(f"audit append {append_ratio:.2f}x bare INSERT+COMMIT; verification {verify_rate:,.0f} events/s")
    return 0 if append_ratio >= TARGET_APPEND_RATIO and verify_rate >= TARGET_VERIFY_RATE else 1


def measure_appends(count: int) -> float:
    from django.db import connection, transaction

    from controlplane.audit import ObjectRef, record
    from controlplane.identity import Actor

    actor = Actor("bench", kind="system")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE bench_insert (id bigserial PRIMARY KEY, "
            "created_at timestamptz NOT NULL DEFAULT now(), actor text, action text, "
            "object_type text, object_id text, payload jsonb, hash text)"
        )

    def audit_block(start: int) -> float:
        began = time.perf_counter()
        for number in range(start, start + BLOCK):
            with transaction.atomic():
                record(actor, "bench.event", ObjectRef("bench", str(number)), {"n": number})
        return time.perf_counter() - began

    def insert_block(start: int) -> float:
        began = time.perf_counter()
        with connection.cursor() as cursor:
            for number in range(start, start + BLOCK):
                with transaction.atomic():
                    cursor.execute(
                        "INSERT INTO bench_insert (actor, action, object_type, object_id, payload, hash) "
                        "VALUES (%s, %s, %s, %s, %s, %s)",
                        ["system:bench", "bench.event", "bench", str(number), f'{{"n": {number}}}', "0" * 64],
                    )
        return time.perf_counter() - began

    audit_block(0), insert_block(0)  # warm-up
    audit_s = insert_s = 0.0
    for start in range(BLOCK, count + BLOCK, BLOCK):
        audit_s += audit_block(start)
        insert_s += insert_block(start)
    audit_rate, insert_rate = count / audit_s, count / insert_s
    print(f"bare INSERT+COMMIT      {insert_rate:10,.0f} rows/s   ({insert_s / count * 1e6:7.1f} µs each)")
    print(f"audit append (record)   {audit_rate:10,.0f} events/s ({audit_s / count * 1e6:7.1f} µs each)")
    return audit_rate / insert_rate


def measure_verification(count: int) -> float:
    from django.db import connection

    from controlplane.audit import chain_hash, verify_chain
    from controlplane.canonical import digest
    from controlplane.models import GENESIS_HASH, AuditEvent

    head = AuditEvent.objects.order_by("-seq").first()
    seq, prev_hash = (head.seq, head.hash) if head else (0, GENESIS_HASH)
    began = time.perf_counter()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    columns = ", ".join(COPY_COLUMNS)
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY controlplane_auditevent ({columns}) FROM STDIN") as copy,
    ):
        for number in range(count - seq if count > seq else 0):
            seq += 1
            payload = {"n": number, "state": "draft", "ok": number % 7 != 0}
            event = AuditEvent(
                seq=seq,
                created_at=start + timedelta(milliseconds=seq),
                actor=f"agent:worker-{number % 16}",
                action="step.transition",
                object_type="runs.run",
                object_id=str(number % 5000),
                trace_id=f"{number:032x}",
                run_id="",
                release_id="rel_bench",
                payload=payload,
                payload_digest=digest(payload),
                prev_hash=prev_hash,
            )
            event.hash = prev_hash = chain_hash(prev_hash, event)
            copy.write_row(
                [_json(payload) if name == "payload" else getattr(event, name) for name in COPY_COLUMNS]
            )
    print(f"wrote a chain of {seq:,} events in {time.perf_counter() - began:.0f} s")
    began = time.perf_counter()
    result = verify_chain()
    elapsed = time.perf_counter() - began
    if not result.ok:
        print(f"the generated chain does not verify: {result.as_dict()}", file=sys.stderr)
        return 0.0
    rate = result.checked / elapsed
    print(f"verify_chain            {rate:10,.0f} events/s ({result.checked:,} events in {elapsed:.1f} s)")
    return rate


def _json(value: dict) -> str:
    return json.dumps(value)


if __name__ == "__main__":
    sys.exit(main())
