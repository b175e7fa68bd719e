"""Extension points: checks that higher layers add to registry use cases.

The registry sits below the policy engine and must not import it, yet publishing a policy
bundle must run its tests and promoting a release must ask policy. The policy app
registers its checks here when Django starts (`PolicyConfig.ready`); each returns the
reasons to refuse (empty when it has none) and may write its own records in the caller's
transaction.
"""

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .artifact_kinds import Problem

# kind -> checks of an artifact's content before it is published
publish_checks: dict[str, list[Callable[[dict], list[Problem]]]] = defaultdict(list)
# (release, channel name, gated, actor) -> refusal reasons
promotion_checks: list[Callable[[Any, str, bool, Any], list[str]]] = []
# (agent, to_status, reason, actor) -> refusal reasons
lifecycle_checks: list[Callable[[Any, str, str, Any], list[str]]] = []
