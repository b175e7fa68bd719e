from django.core.management.base import BaseCommand, CommandError

from controlplane.identity import Actor, api_key_revoke
from controlplane.models import ApiKey


class Command(BaseCommand):
    help = (
        "Revoke an API key by its prefix (the part after baton_, also shown in the admin); it stops "
        "working at once. To rotate a key, issue its successor with create_api_key, move the client "
        "to it, then revoke the old one."
    )

    def add_arguments(self, parser):
        parser.add_argument("prefix", help="The key's 8-character prefix, e.g. 3f2a9c1d.")

    def handle(self, *args, prefix, **options):
        api_key = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
        if api_key is None:
            raise CommandError(f"No API key with prefix {prefix!r}.")
        if api_key.revoked_at is not None:
            self.stderr.write(
                f"API key {prefix} was already revoked at {api_key.revoked_at:%Y-%m-%d %H:%M} UTC."
            )
            return
        api_key_revoke(api_key=api_key, revoked_by=Actor(name="cli", kind="system"))
        self.stderr.write(f"API key {prefix} of {api_key.user.get_username()} revoked.")
