"""WSGI entry point for gunicorn."""

import os

from django.core.wsgi import get_wsgi_application

from controlplane.telemetry import configure_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
# Before the handler is built: it reads the middleware list once, and the Django
# instrumentation adds its own to it.
configure_tracing()
application = get_wsgi_application()
