import json

from django.core.management.base import BaseCommand, CommandError

from controlplane.audit import verify_chain


class Command(BaseCommand):
    help = "Verify the audit ledger's hash chain; prints {ok, checked, first_bad} and exits 1 if broken."

    def add_arguments(self, parser):
        parser.add_argument("--progress", action="store_true", help="report events verified so far on stderr")

    def handle(self, *args, **options):
        report = (
            (lambda checked: self.stderr.write(f"verified {checked:,} events"))
            if options["progress"]
            else None
        )
        result = verify_chain(progress=report)
        self.stdout.write(json.dumps(result.as_dict()))
        if not result.ok:
            raise CommandError(
                f"audit chain broken at event #{result.first_bad}: {result.reason}", returncode=1
            )
