"""Environment access shared by the settings modules.

Every value comes from the environment (12-factor). `*_FILE` variants let secrets come
from mounted files (Docker/Kubernetes secrets) instead of plain variables. A value that
cannot be used stops the process at start with an ImproperlyConfigured that names the
variable, never later in a request or a task.
"""

import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("BATON_VAR_DIR", BASE_DIR / "var"))

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0", "")
_BOOLEANS = dict.fromkeys(_TRUE, True) | dict.fromkeys(_FALSE, False)
_EXPECTED = {int: "a whole number", float: "a number", bool: "true or false"}


class StrictEnv(environ.Env):
    """django-environ, strict: its own errors name neither the variable nor what was expected
    (`invalid literal for int()`), any word but its true ones means False (`DEBUG=True1`), and a
    float keeps only the digits it finds (`1e3` is 13). Numbers may also have a lower bound."""

    def get_value(self, var, cast=None, default=environ.Env.NOTSET, parse_default=False):
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ValueError:
            expected = _EXPECTED.get(cast, "readable")
            raise ImproperlyConfigured(f"{var} must be {expected}, not {self.ENVIRON.get(var)!r}") from None

    @classmethod
    def parse_value(cls, value, cast):
        if cast is bool:
            word = str(value).strip().lower()
            if word not in _BOOLEANS:
                raise ValueError(value)
            return _BOOLEANS[word]
        if cast is float:
            return float(value)
        return super().parse_value(value, cast)

    def int(self, var, default=environ.Env.NOTSET, *, minimum: int | None = None) -> int:
        return _at_least(var, super().int(var, default=default), minimum)

    def float(self, var, default=environ.Env.NOTSET, *, minimum: float | None = None) -> float:
        return _at_least(var, super().float(var, default=default), minimum)


env = StrictEnv()


def _at_least(name: str, value, minimum):
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def secret(name: str, default: str | None = None) -> str | None:
    """Read `name`, or the contents of the file named by `name_FILE`."""
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        try:
            return Path(file_path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_path} cannot be read: {exc}") from exc
    return os.environ.get(name, default)


def url(name: str, value: str | None, *, schemes: tuple[str, ...] = ("http", "https")) -> str:
    """`value`, read from `name`, if it is a URL with one of `schemes` and a host; empty stays empty.

    A URL may carry a password, so a wrong one is described, not quoted."""
    value = value or ""
    parts = urlsplit(value)
    starts = [f"{scheme}://" for scheme in schemes]
    if value and (parts.scheme not in schemes or not parts.netloc):
        raise ImproperlyConfigured(f"{name} must be a URL with a host, starting with {' or '.join(starts)}")
    return value


def networks(name: str, listed: list[str]) -> list[str]:
    """`listed`, read from `name`, if each is an IP network (`10.0.0.0/8`) or address."""
    listed = [network.strip() for network in listed if network.strip()]
    for network in listed:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must list networks such as 10.0.0.0/8 or 192.0.2.7, not {network!r}"
            ) from None
    return listed


def database(name: str, default: str) -> dict:
    """Django's DATABASES entry for the URL in `name` (or `name_FILE`: it holds a password)."""
    value = secret(name) or default
    try:
        config = env.db_url_config(value)
    except (ImproperlyConfigured, KeyError, ValueError):
        config = {}
    if config.get("ENGINE") not in {"django.db.backends.postgresql", "django.db.backends.sqlite3"}:
        raise ImproperlyConfigured(
            f"{name} must be postgres://user:password@host:5432/name or sqlite:///path/to/file"
        )
    return config


def mail(name: str, default: str) -> dict:
    """Django's EMAIL_* settings for the mail URL in `name` (or `name_FILE`: it holds a password)."""
    try:
        return env.email_url_config(secret(name) or default)
    except (ImproperlyConfigured, KeyError, ValueError):
        raise ImproperlyConfigured(
            f"{name} must be a mail URL such as smtp+tls://user:password@mail.example.org:587 or consolemail://"
        ) from None


def local_secret_key() -> str:
    """A key generated once into var/ so that local sessions survive restarts."""
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()
