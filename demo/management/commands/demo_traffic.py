"""`manage.py demo_traffic --rate N --duration S`: realistic cases through the REST API."""

import math
import secrets
import sys
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from baton_client import BatonClient
from controlplane.identity import Actor, api_key_issue, api_key_revoke
from demo.traffic import drive

ISSUER = Actor("demo-traffic", kind="system")


class Command(BaseCommand):
    help = "Submit realistic demo cases through the REST API (as the demo requester) and report the outcomes."

    def add_arguments(self, parser):
        parser.add_argument("--rate", type=float, default=2.0, help="tasks per second")
        parser.add_argument("--duration", type=float, default=10.0, help="seconds of submissions")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="where Baton serves its API")
        parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for runs to settle")
        parser.add_argument("--user", default="requester", help="who submits (default: the demo requester)")

    def handle(self, *args, **options):
        if settings.PRODUCTION:
            raise CommandError("Demo traffic is not sent when BATON_ENV=production.")
        if not all(math.isfinite(options[name]) and options[name] > 0 for name in ("rate", "duration")):
            raise CommandError("--rate and --duration must be positive, finite numbers.")
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No user {options['user']!r}: run `manage.py load_demo` first.")
        issued = api_key_issue(
            user=user,
            name="demo traffic",
            scopes=["tasks:write", "runs:read"],
            expires_in=timedelta(hours=1),
            issued_by=ISSUER,
        )
        try:
            with BatonClient(options["url"], issued.secret) as client:
                report = drive(
                    client,
                    rate=options["rate"],
                    duration=options["duration"],
                    wait=options["wait"],
                    prefix=f"traffic-{secrets.token_hex(4)}",
                    progress=self._progress,
                )
        finally:
            api_key_revoke(api_key=issued.api_key, revoked_by=ISSUER)
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"Submitted {report.submitted} cases."))
        self.stdout.write("Outcomes:")
        for outcome, count in sorted(report.outcomes.items()):
            self.stdout.write(f"  {outcome}: {count}")
        self.stdout.write("By kind of case:")
        for kind, outcomes in sorted(report.by_kind.items()):
            self.stdout.write(f"  {kind}: " + ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items())))
        if report.outcomes["dead_lettered"]:
            dead_letters = f"{options['url'].rstrip('/')}/runs/dead-letters/"
            self.stdout.write(
                f"Dead-lettered runs wait at {dead_letters} (as platform), to be retried or discarded."
            )

    def _progress(self, done: int, total: int) -> None:
        width = 30
        filled = width * done // total
        self.stdout.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} submitted", ending="")
        sys.stdout.flush()
