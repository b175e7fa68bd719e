"""`manage.py evidence_verify <package.zip>`: check an evidence package offline.

The checks are those of docs/verify_evidence.py, which auditors can run without Baton: this
command runs that very script, so the two can never disagree.
"""

import importlib.util
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

VERIFIER = Path(settings.BASE_DIR) / "docs" / "verify_evidence.py"


class Command(BaseCommand):
    help = "Verify an evidence package: signatures, file digests and the audit-chain checkpoint."

    def add_arguments(self, parser):
        parser.add_argument("package")
        parser.add_argument("--public-key", help="the deployment public key (PEM) to trust")

    def handle(self, *args, **options):
        spec = importlib.util.spec_from_file_location("verify_evidence", VERIFIER)
        verifier = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(verifier)
        argv = [options["package"]] + (
            ["--public-key", options["public_key"]] if options["public_key"] else []
        )
        if verifier.main(argv) != 0:
            raise CommandError("The evidence package does not verify.")
