from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from controlplane.errors import ServiceError
from controlplane.identity import actor_for
from registry.services.bundles import bundle_apply, load_bundle_file


class Command(BaseCommand):
    help = "Create the teams, agents, artifact versions and releases a bundle file declares (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("bundle", type=Path)
        parser.add_argument(
            "--as",
            dest="username",
            default="admin",
            help="The user recorded as author and actor (default: admin).",
        )

    def handle(self, *args, bundle: Path, username: str, **options):
        author = get_user_model().objects.filter(username=username, is_active=True).first()
        if author is None:
            raise CommandError(f"No active user named {username!r} (choose one with --as).")
        try:
            report = bundle_apply(bundle=load_bundle_file(bundle), author=author, actor=actor_for(author))
        except ServiceError as error:
            problems = (error.errors or {}).get("problems") or (error.errors or {}).get("release") or []
            details = "".join(
                f"\n  {p['path']}: {p['message']}" if isinstance(p, dict) else f"\n  {p}" for p in problems
            )
            raise CommandError(f"{error.detail}{details}") from error
        for label in report.created:
            self.stdout.write(f"created   {label}")
        self.stdout.write(
            f"{len(report.created)} created, {len(report.unchanged)} unchanged; "
            f"releases: {', '.join(report.releases) or 'none'}"
        )
