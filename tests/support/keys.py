"""Keys for tests that start Baton as production does."""

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def ed25519_pem() -> str:
    """A fresh Ed25519 private key as EVIDENCE_SIGNING_KEY takes it (PEM, PKCS#8)."""
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
