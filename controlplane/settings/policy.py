"""Policy engine: embedded Rego by default, an OPA server when OPA_URL is set."""

from .env import env, secret, url

OPA_URL = url("OPA_URL", env.str("OPA_URL", default=""))
OPA_TOKEN = secret("OPA_TOKEN", default="")
# A decision slower than this is denied as policy_unavailable (fail closed).
POLICY_TIMEOUT_MS = env.int("POLICY_TIMEOUT_MS", default=250, minimum=1)
# Which published policy bundle decides control-plane actions (promotion, agent lifecycle).
POLICY_GOVERNANCE_BUNDLE = env.str("POLICY_GOVERNANCE_BUNDLE", default="default")
