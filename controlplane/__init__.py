# rego-cpp (regopy) must be loaded before greenlet, which Celery brings in: loaded after it,
# every policy decision leaks about 10 KB that is never given back.
import regopy  # noqa: F401

from .celery import app as celery_app

__all__ = ["celery_app"]
