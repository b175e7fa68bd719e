import json

from django.core.management.base import BaseCommand, CommandError

from controlplane.audit import verify_chain


class Command(BaseCommand):
    help = "Verify the audit ledger's hash chain; prints {ok, checked, first_bad} and exits 1 if broken."

    def handle(self, *args, **options):
        result = verify_chain()
        self.stdout.write(json.dumps(result.as_dict()))
        if not result.ok:
            raise CommandError(
                f"audit chain broken at event #{result.first_bad}: {result.reason}", returncode=1
            )
