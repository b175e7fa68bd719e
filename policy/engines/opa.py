"""The OPA server engine: pushes each bundle to OPA once, keyed by its digest, and queries
OPA's data API.

OPA has one global namespace, while Baton may run several bundle versions at once (a
canary pins another release), so each bundle is loaded under `data.bundles.b<digest>`:
its packages and its `data.` references are prefixed, and its data documents are written
under the same prefix beside the packages.
"""

import re
import threading
from typing import Any
from urllib.parse import quote, urlsplit

from opa_client import OpaClient

from ..bundles import PolicyBundle
from . import UNDEFINED, EngineError, refuse_outside_reaching_calls

_TOKEN = re.compile(r'#[^\n]*|"(?:\\.|[^"\\])*"|`[^`]*`|\bdata\.|\bpackage\s+')


def namespace(bundle: PolicyBundle) -> str:
    return f"bundles.b{bundle.digest[:24]}"


def rewrite_module(source: str, prefix: str) -> str:
    """Prefix the package and every `data.` reference, leaving comments and strings alone."""

    def replace(match: re.Match) -> str:
        token = match.group(0)
        if token.startswith("data."):
            return f"data.{prefix}."
        if token.startswith("package"):
            return f"{token}{prefix}."
        return token

    return _TOKEN.sub(replace, source)


def data_writes(data: dict, prefix: str, package_paths: set[str]) -> list[tuple[str, Any]]:
    """Where to PUT the bundle's data: as high as possible without covering a package."""
    writes = []
    pending = [(prefix, data)]
    while pending:
        path, value = pending.pop()
        covers_package = any(package == path or package.startswith(f"{path}.") for package in package_paths)
        if covers_package and isinstance(value, dict):
            pending += [(f"{path}.{key}", child) for key, child in value.items()]
        elif covers_package:
            raise EngineError(f"data at {path} collides with a policy package")
        else:
            writes.append((path, value))
    return writes


class OpaServerEngine:
    name = "opa"

    def __init__(self, url: str, *, token: str = "", timeout_s: float = 0.25) -> None:
        parts = urlsplit(url)
        self._client = OpaClient(
            host=parts.hostname,
            port=parts.port or (443 if parts.scheme == "https" else 80),
            ssl=parts.scheme == "https",
            token=token or None,
            retries=0,
            timeout=timeout_s,
        )
        self._loaded: set[str] = set()
        self._lock = threading.Lock()

    def prepare(self, bundle: PolicyBundle) -> None:
        try:
            self._ensure_loaded(bundle, namespace(bundle))
        except EngineError:
            raise
        except Exception as error:  # requests' and opa_client's errors alike: no answer is a failure
            raise EngineError(f"pushing the bundle to OPA failed: {error}") from error

    def evaluate(self, bundle: PolicyBundle, entrypoint: str, document: dict) -> Any:
        self.prepare(bundle)
        try:
            response = self._client.query_rule(
                document, f"{namespace(bundle)}.{entrypoint.replace('/', '.')}"
            )
        except Exception as error:
            raise EngineError(f"OPA query failed: {error}") from error
        return response.get("result", UNDEFINED)

    def _ensure_loaded(self, bundle: PolicyBundle, prefix: str) -> None:
        if bundle.digest in self._loaded:
            return
        with self._lock:
            if bundle.digest in self._loaded:
                return
            refuse_outside_reaching_calls(bundle)
            packages = set()
            for name, source in sorted(bundle.modules.items()):
                rewritten = rewrite_module(source, prefix)
                package = re.search(r"^\s*package\s+([\w.]+)", rewritten, re.MULTILINE)
                if package:
                    packages.add(package.group(1))
                # The name is one path segment: dot segments (`../<digest>/x.rego`) would otherwise
                # be resolved before sending and replace another bundle's module.
                self._client.update_policy_from_string(
                    rewritten, f"{bundle.digest}/{quote(name, safe='')}", rego_compat=False
                )
            for path, value in data_writes(bundle.data, prefix, packages):
                if not isinstance(value, dict):
                    raise EngineError(f"bundle data at {path} must be an object to be written to OPA")
                self._client.update_or_create_data(value, path.replace(".", "/"))
            self._loaded.add(bundle.digest)
