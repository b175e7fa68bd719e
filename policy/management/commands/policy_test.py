import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from policy.bundles import SHIPPED_DEFAULT, bundle_by_ref, bundle_from_dir
from policy.testing import run_bundle_tests


class Command(BaseCommand):
    help = "Run a policy bundle's Rego tests (rules named test_*): a folder, or a published 'name[@version]'."

    def add_arguments(self, parser):
        parser.add_argument(
            "bundle",
            nargs="?",
            default=str(SHIPPED_DEFAULT),
            help="Folder of .rego files (+ data.json), or a published bundle. Default: the shipped one.",
        )

    def handle(self, *args, bundle: str, **options):
        path = Path(bundle)
        try:
            policy_bundle = bundle_from_dir(path) if path.is_dir() else bundle_by_ref(bundle)
        except json.JSONDecodeError as error:
            raise CommandError(f"{path / 'data.json'} is not valid JSON: {error}") from error
        if policy_bundle is None:
            raise CommandError(f"{bundle!r} is neither a folder nor a published policy bundle.")
        results = run_bundle_tests(policy_bundle.modules, policy_bundle.data)
        for result in results:
            label = self.style.SUCCESS("PASS") if result.passed else self.style.ERROR("FAIL")
            self.stdout.write(f"{label} {result.name}" + (f"  ({result.detail})" if result.detail else ""))
        failed = [result for result in results if not result.passed]
        self.stdout.write(f"{len(results) - len(failed)}/{len(results)} passed")
        if failed or not results:
            raise CommandError("policy tests failed" if failed else "the bundle has no tests", returncode=1)
