from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """A built-in system of record for demos and tests: support cases, refunds, case updates.

    The demo workflows' tools call it in process (transport type `sandbox`); it keeps an
    idempotency table like a real external system would, so exactly-once calls, reconcile
    lookups and compensations can be shown without one. It knows nothing of runs.
    """

    name = "sandbox"
