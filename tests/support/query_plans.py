"""How PostgreSQL would read the statements a page or a report sends, asked of the test database.

A test gives the table rows in the proportions of a production one (most of them not what the
statement asks for) and its statistics; with sequential scans priced out, since a table of a few
pages is cheaper to read whole whatever its indexes, the plan shows the index PostgreSQL would
answer the statement with on a large table.
"""

from collections.abc import Callable

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext


def postgresql_only(test: Callable) -> Callable:
    """Marks a test of query plans: it runs on PostgreSQL, and is skipped on SQLite."""
    skip_elsewhere = pytest.mark.skipif(
        connection.vendor != "postgresql", reason="query plans are PostgreSQL's"
    )
    return pytest.mark.postgres(skip_elsewhere(test))


def plans_reading(table: str, call: Callable[[], object], *, where: str = "") -> list[str]:
    """The plan of every statement `call` sends that reads `table` (and holds `where`), with the
    table's statistics up to date."""
    with CaptureQueriesContext(connection) as captured:
        call()
    statements = [
        query["sql"]
        for query in captured.captured_queries
        if query["sql"].startswith("SELECT") and f'FROM "{table}"' in query["sql"] and where in query["sql"]
    ]
    assert statements, f"nothing read {table}"
    with connection.cursor() as cursor:
        cursor.execute(f'ANALYZE "{table}"')
        cursor.execute("SET LOCAL enable_seqscan = off")
        plans = []
        for statement in statements:
            cursor.execute(f"EXPLAIN {statement}")
            plans.append("\n".join(row[0] for row in cursor.fetchall()))
        cursor.execute("SET LOCAL enable_seqscan = on")
    return plans
