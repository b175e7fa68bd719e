import yaml
from django.core.management.base import BaseCommand, CommandError

from registry.models import Release
from registry.services.bundles import bundle_export


class Command(BaseCommand):
    help = "Write a release (its artifacts, agents and workflow) as a bundle file release_apply accepts."

    def add_arguments(self, parser):
        parser.add_argument("release_id")
        parser.add_argument("--output", "-o", help="File to write (default: standard output).")

    def handle(self, *args, release_id: str, output: str | None, **options):
        release = Release.objects.filter(pk=release_id).first()
        if release is None:
            raise CommandError(f"No release {release_id!r}.")
        text = yaml.safe_dump(bundle_export(release), sort_keys=False, allow_unicode=True, width=100)
        if output:
            with open(output, "w") as handle:
                handle.write(text)
            self.stderr.write(f"wrote {output}")
        else:
            self.stdout.write(text)
