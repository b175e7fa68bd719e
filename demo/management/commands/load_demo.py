from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from demo.services import DEMO_PASSWORD_HINT, demo_load


class Command(BaseCommand):
    help = "Create the demo users (one per role) and a few demo runs. Refused in production."

    def handle(self, *args, **options):
        if settings.PRODUCTION:
            raise CommandError("Demo data is not loaded when BATON_ENV=production.")
        result = demo_load()
        self.stdout.write(self.style.SUCCESS("Demo data ready."))
        self.stdout.write(f"Demo logins ({DEMO_PASSWORD_HINT}):")
        for username, role, password in result.logins:
            self.stdout.write(f"  {username:<12} {password:<22} {role}")
        if result.releases:
            self.stdout.write(f"Releases: {', '.join(result.releases)}")
        if result.runs_created:
            self.stdout.write(f"Submitted {result.runs_created} demo runs.")
