"""Django's flush, able to empty the append-only ledger outside production.

Tests and local resets need an empty database; production must not be able to wipe the
audit trail with one command, so there the ledger's triggers refuse the flush as usual.
"""

from django.conf import settings
from django.core.management.commands.flush import Command as DjangoFlushCommand
from django.db import connections

from controlplane import ledger_protection


class Command(DjangoFlushCommand):
    def handle(self, **options):
        if settings.PRODUCTION:
            return super().handle(**options)
        connection = connections[options["database"]]
        ledger_protection.remove(connection)
        try:
            return super().handle(**options)
        finally:
            ledger_protection.install(connection)
