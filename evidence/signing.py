"""The deployment's Ed25519 key: it signs evidence packages and checkpoints of the audit chain.

Production reads the private key (PEM, PKCS#8) from EVIDENCE_SIGNING_KEY or
EVIDENCE_SIGNING_KEY_FILE; elsewhere a key is generated once into var/, like the secret key.
Verifiers only ever need the public key, which every package carries and which auditors
should compare with the fingerprint the deployment publishes (its key id).
"""

import base64
import hashlib
import os
from functools import cache

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured


@cache
def signing_key() -> Ed25519PrivateKey:
    pem = settings.EVIDENCE_SIGNING_KEY or _local_key_pem()  # the settings require it in production
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured(
            "EVIDENCE_SIGNING_KEY must be an unencrypted Ed25519 private key (PEM, PKCS#8), such as "
            "`openssl genpkey -algorithm ed25519` writes"
        )
    return key


def check_signing_key(**kwargs) -> list[checks.CheckMessage]:
    """A configured key that cannot sign stops `check` and `migrate` (a deployment's first
    step), not the first evidence export or checkpoint."""
    if not settings.EVIDENCE_SIGNING_KEY:
        return []  # generated locally on first use
    try:
        signing_key()
    except ImproperlyConfigured as error:
        return [checks.Error(str(error), id="evidence.E001")]
    return []


def public_key_pem() -> str:
    return (
        signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def key_id() -> str:
    """The key's fingerprint: sha256 of its raw public bytes, first 16 hex digits."""
    raw = signing_key().public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(message: bytes) -> str:
    return base64.b64encode(signing_key().sign(message)).decode()


def signature_valid(message: bytes, signature: str, public_key: Ed25519PublicKey | None = None) -> bool:
    key = public_key or signing_key().public_key()
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, message)
    except (InvalidSignature, ValueError):
        return False
    return base64.b64encode(raw).decode() == signature  # the canonical spelling only


def _local_key_pem() -> str:
    """A key generated once into var/ and shared by the web process and the local workers."""
    key_file = settings.VAR_DIR / "evidence_signing_key.pem"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        draft = key_file.with_name(f"{key_file.name}.{os.getpid()}")
        draft.write_bytes(pem)
        draft.chmod(0o600)
        try:
            os.link(draft, key_file)  # atomic, and refused if another process got there first
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return key_file.read_text()
