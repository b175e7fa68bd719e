from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from controlplane.identity import DEFAULT_KEY_SCOPES, SCOPES, Actor, api_key_issue

# A hundred years: far beyond any rotation policy, and far below the year 9999 a date cannot pass.
MAX_EXPIRES_DAYS = 36_500


class Command(BaseCommand):
    help = "Issue an API key for a user and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            choices=sorted(SCOPES),
            help=f"Repeat for several scopes (default: {' '.join(DEFAULT_KEY_SCOPES)}).",
        )
        parser.add_argument("--expires-days", type=int, help="Days until the key expires (default: never).")
        parser.add_argument("--name", default="cli", help="A label to recognise the key by.")

    def handle(self, *args, username, scopes, expires_days, name, **options):
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active user named {username!r}.")
        if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRES_DAYS:
            raise CommandError(
                f"--expires-days must be a positive number of days, at most {MAX_EXPIRES_DAYS}."
            )
        issued = api_key_issue(
            user=user,
            name=name,
            scopes=scopes or DEFAULT_KEY_SCOPES,
            expires_in=timedelta(days=expires_days) if expires_days else None,
            issued_by=Actor(name="cli", kind="system"),
        )
        self.stderr.write(
            f"API key {issued.api_key.prefix} for {username}, scopes {' '.join(issued.api_key.scopes)}"
            + (f", expires {issued.api_key.expires_at:%Y-%m-%d}" if issued.api_key.expires_at else "")
            + ". It is shown once; store it now."
        )
        self.stdout.write(issued.secret)
