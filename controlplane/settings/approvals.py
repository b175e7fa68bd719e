"""Approvals: due times, escalation, and how reviewers are notified."""

from .env import env, secret

# A request not decided within this time escalates (a step may set `approval_timeout_s`).
APPROVAL_DUE_SECONDS = env.int("APPROVAL_DUE_SECONDS", default=24 * 3600)
APPROVAL_ESCALATION_INTERVAL_SECONDS = env.int("APPROVAL_ESCALATION_INTERVAL_SECONDS", default=60)
APPROVAL_DEFAULT_GROUP = "reviewer"
# Dotted paths of notifier classes; empty for none.
APPROVAL_NOTIFIERS = env.list("APPROVAL_NOTIFIERS", default=["approvals.notifiers.EmailNotifier"])
APPROVAL_WEBHOOK_URL = env.str("APPROVAL_WEBHOOK_URL", default="")
APPROVAL_WEBHOOK_SECRET = secret("APPROVAL_WEBHOOK_SECRET", default="") or ""
APPROVAL_WEBHOOK_TIMEOUT_SECONDS = env.float("APPROVAL_WEBHOOK_TIMEOUT_SECONDS", default=5.0)
# Links in notices point here.
BATON_BASE_URL = env.str("BATON_BASE_URL", default="http://127.0.0.1:8000")
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="baton@localhost")
