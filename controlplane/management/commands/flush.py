"""Django's flush, able to empty append-only tables outside production.

Tests and local resets need an empty database; production must not be able to wipe the
audit trail or published history with one command, so there the triggers refuse the
flush as usual.
"""

from django.conf import settings
from django.core.management.commands.flush import Command as DjangoFlushCommand
from django.db import connections

from controlplane import append_only


class Command(DjangoFlushCommand):
    def handle(self, **options):
        if settings.PRODUCTION:
            return super().handle(**options)
        connection = connections[options["database"]]
        tables = append_only.protected_tables()
        for table in tables:
            append_only.remove(connection, table)
        try:
            return super().handle(**options)
        finally:
            for table in tables:
                append_only.install(connection, table)
