"""Approvals: due times, escalation, and how reviewers are notified."""

from .env import env, mail, secret, url

# A request not decided within this time escalates (a step may set `approval_timeout_s`).
APPROVAL_DUE_SECONDS = env.int("APPROVAL_DUE_SECONDS", default=24 * 3600, minimum=1)
APPROVAL_ESCALATION_INTERVAL_SECONDS = env.int("APPROVAL_ESCALATION_INTERVAL_SECONDS", default=60, minimum=1)
APPROVAL_DEFAULT_GROUP = "reviewer"
# Dotted paths of notifier classes; empty for none.
APPROVAL_NOTIFIERS = env.list("APPROVAL_NOTIFIERS", default=["approvals.notifiers.EmailNotifier"])
# Chat webhooks carry their credential in the URL, so it may come from APPROVAL_WEBHOOK_URL_FILE.
APPROVAL_WEBHOOK_URL = url("APPROVAL_WEBHOOK_URL", secret("APPROVAL_WEBHOOK_URL"))
APPROVAL_WEBHOOK_SECRET = secret("APPROVAL_WEBHOOK_SECRET", default="") or ""
APPROVAL_WEBHOOK_TIMEOUT_SECONDS = env.float("APPROVAL_WEBHOOK_TIMEOUT_SECONDS", default=5.0, minimum=0.1)
# Links in notices point here.
BATON_BASE_URL = url("BATON_BASE_URL", env.str("BATON_BASE_URL", default="http://127.0.0.1:8000"))

# Mail: one URL (it may hold a password, so it may come from EMAIL_URL_FILE), e.g.
# smtp+tls://user:password@mail.example.org:587; by default mail is printed on the console.
_email = mail("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = _email.get("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _email.get("EMAIL_USE_SSL", False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="baton@localhost")
