from pathlib import Path

import pytest
from django.conf import settings

from controlplane.identity import actor_for
from registry.services.bundles import bundle_apply, load_bundle_file

SUPPORT_BUNDLE = Path(settings.BASE_DIR) / "demo" / "bundles" / "support_case_resolution.yaml"


@pytest.fixture
def support_bundle() -> dict:
    return load_bundle_file(SUPPORT_BUNDLE)


@pytest.fixture
def demo_registry(platform_user, support_bundle):
    """The support workflow's teams, agents, artifacts and first release, published by platform."""
    return bundle_apply(bundle=support_bundle, author=platform_user, actor=actor_for(platform_user))
