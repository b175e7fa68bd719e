"""Settings: one base module plus one module per concern, all read from the environment."""

from .approvals import *  # noqa: F403
from .base import *  # noqa: F403
from .celery import *  # noqa: F403
from .evidence import *  # noqa: F403
from .monitoring import *  # noqa: F403
from .policy import *  # noqa: F403
from .replays import *  # noqa: F403
from .telemetry import *  # noqa: F403
