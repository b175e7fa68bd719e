"""Time from the database server, never from a worker's clock.

A worker with a skewed clock must not be able to expire a lease early or reorder events,
so leases and ledger timestamps are computed by the database.
"""

from datetime import UTC, datetime, timedelta

from django.db import connection, models
from django.db.models.functions import Now


def database_now() -> datetime:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT clock_timestamp()")
            return cursor.fetchone()[0]
        cursor.execute("SELECT strftime('%Y-%m-%dT%H:%M:%f', 'now')")
        return datetime.fromisoformat(cursor.fetchone()[0]).replace(tzinfo=UTC)


def database_now_plus(seconds: float) -> models.Expression:
    """An expression for "now + seconds" evaluated by the database in the query itself."""
    return models.ExpressionWrapper(Now() + timedelta(seconds=seconds), output_field=models.DateTimeField())
