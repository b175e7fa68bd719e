from tests.conftest import SUPPORT_BUNDLE

__all__ = ["SUPPORT_BUNDLE"]
