"""Celery: the data plane's broker and worker behaviour.

PostgreSQL is the system of record; the broker only carries "advance run X" messages,
so losing one never loses a run (the sweeper re-enqueues expired leases).
"""

from .approvals import APPROVAL_ESCALATION_INTERVAL_SECONDS
from .env import VAR_DIR, env, secret, url
from .evidence import AUDIT_CHECKPOINT_INTERVAL_SECONDS, EVIDENCE_EXPORT_SWEEP_INTERVAL_SECONDS
from .monitoring import ROLLBACK_CHECK_INTERVAL_SECONDS
from .replays import REPLAY_SHADOW_INTERVAL_SECONDS, REPLAY_SWEEP_INTERVAL_SECONDS

# It may hold a password, so it may come from REDIS_URL_FILE.
REDIS_URL = url("REDIS_URL", secret("REDIS_URL"), schemes=("redis", "rediss"))

if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    # Longer than any step can take, so that Redis never re-delivers a message whose
    # worker is still busy with it.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600, minimum=1)
    }
else:
    # A broker that needs no server: messages are files under var/broker.
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(VAR_DIR / "broker-control"),
        "store_processed": False,
        "polling_interval": 0.2,
    }
    for _folder in (_broker_dir, VAR_DIR / "broker-control"):
        _folder.mkdir(parents=True, exist_ok=True)

CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="baton")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Tasks reuse their database connection as requests do (see controlplane/celery.py); Celery's
# own fixup then closes it only every this many tasks.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000, minimum=0)

# How long a worker owns a run before the sweeper may hand it to another worker.
RUN_LEASE_SECONDS = env.int("RUN_LEASE_SECONDS", default=60, minimum=1)
RUN_SWEEP_INTERVAL_SECONDS = env.int("RUN_SWEEP_INTERVAL_SECONDS", default=30, minimum=1)

CELERY_BEAT_SCHEDULE = {
    "sweep-expired-run-leases": {
        "task": "runs.tasks.sweep_expired_leases",
        "schedule": RUN_SWEEP_INTERVAL_SECONDS,
    },
    "escalate-due-approvals": {
        "task": "approvals.tasks.escalate_due_approvals",
        "schedule": APPROVAL_ESCALATION_INTERVAL_SECONDS,
    },
    "checkpoint-audit-chain": {
        "task": "evidence.tasks.checkpoint_audit_chain",
        "schedule": AUDIT_CHECKPOINT_INTERVAL_SECONDS,
    },
    "sweep-lost-evidence-exports": {
        "task": "evidence.tasks.sweep_lost_exports",
        "schedule": EVIDENCE_EXPORT_SWEEP_INTERVAL_SECONDS,
    },
    "check-canaries": {
        "task": "monitoring.tasks.check_canaries",
        "schedule": ROLLBACK_CHECK_INTERVAL_SECONDS,
    },
    "replay-shadow-runs": {
        "task": "replays.tasks.replay_shadow_runs",
        "schedule": REPLAY_SHADOW_INTERVAL_SECONDS,
    },
    "sweep-stalled-replays": {
        "task": "replays.tasks.sweep_stalled_replays",
        "schedule": REPLAY_SWEEP_INTERVAL_SECONDS,
    },
}
# A worker gives a run back to the queue after this long, so long runs cannot starve others.
RUN_TIME_SLICE_SECONDS = env.float("RUN_TIME_SLICE_SECONDS", default=5.0, minimum=0)
# Step outputs larger than this are stored once and passed between steps by reference.
RUN_PAYLOAD_INLINE_BYTES = env.int("RUN_PAYLOAD_INLINE_BYTES", default=64 * 1024, minimum=0)
# A step that fails this many times (unless its definition says otherwise) goes to the dead-letter queue.
RUN_STEP_MAX_ATTEMPTS = env.int("RUN_STEP_MAX_ATTEMPTS", default=3, minimum=1)
RUN_RETRY_BACKOFF_SECONDS = env.float("RUN_RETRY_BACKOFF_SECONDS", default=2.0, minimum=0)
# Model providers: a circuit opens after this many consecutive failures and probes again after the reset time.
MODEL_CIRCUIT_FAILURES = env.int("MODEL_CIRCUIT_FAILURES", default=5, minimum=1)
MODEL_CIRCUIT_RESET_SECONDS = env.int("MODEL_CIRCUIT_RESET_SECONDS", default=30, minimum=1)
# A run taken by this many workers in a row without any of them committing (each one crashed)
# is dead-lettered instead of being handed out again: a poison task must not loop forever.
RUN_MAX_CLAIMS = env.int("RUN_MAX_CLAIMS", default=5, minimum=1)
