"""Evidence packages and signed checkpoints of the audit chain."""

from django.core.exceptions import ImproperlyConfigured

from .base import PRODUCTION
from .env import VAR_DIR, env, secret

# Ed25519 private key (PEM, PKCS#8) that signs evidence packages and chain checkpoints;
# required in production (its form is a system check: evidence.E001), generated into var/ elsewhere.
EVIDENCE_SIGNING_KEY = secret("EVIDENCE_SIGNING_KEY", default="")
if PRODUCTION and not EVIDENCE_SIGNING_KEY:
    raise ImproperlyConfigured(
        "EVIDENCE_SIGNING_KEY (or EVIDENCE_SIGNING_KEY_FILE) is required when BATON_ENV=production: "
        "evidence packages and checkpoints of the audit chain are signed with it"
    )
# How often beat signs a checkpoint of the chain's head (a truncated tail is then detected).
AUDIT_CHECKPOINT_INTERVAL_SECONDS = env.int("AUDIT_CHECKPOINT_INTERVAL_SECONDS", default=300, minimum=1)
# How often beat sends again the exports still queued long after they were sent (message lost).
EVIDENCE_EXPORT_SWEEP_INTERVAL_SECONDS = env.int(
    "EVIDENCE_EXPORT_SWEEP_INTERVAL_SECONDS", default=300, minimum=1
)
# A PDF is laid out in memory: larger exports are JSON or CSV, which stream.
EVIDENCE_PDF_MAX_RUNS = env.int("EVIDENCE_PDF_MAX_RUNS", default=200, minimum=1)
# Where the evidence page's packages are written; web and workers must share it.
EVIDENCE_EXPORT_DIR = env.str("EVIDENCE_EXPORT_DIR", default=str(VAR_DIR / "evidence"))
