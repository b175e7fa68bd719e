from django.apps import AppConfig
from django.apps import apps as global_apps


class SandboxConfig(AppConfig):
    """A built-in system of record for demos and tests: support cases, refunds, case updates.

    The demo workflows' tools call it in process (transport type `sandbox`); it keeps an
    idempotency table like a real external system would, so exactly-once calls, reconcile
    lookups and compensations can be shown without one. It knows nothing of runs.
    """

    name = "sandbox"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        # Also after a flush (which empties what the data migration seeded), like Django's own
        # content types and permissions.
        post_migrate.connect(_seed_after_migrate, sender=self, dispatch_uid="sandbox-seed")


def _seed_after_migrate(sender, apps=None, **kwargs) -> None:
    # A module-level receiver: signals hold receivers weakly, and a lambda would be collected.
    from .seed import seed

    seed(apps or global_apps)
