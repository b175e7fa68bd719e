#!/usr/bin/env python3
"""Verify a Baton evidence package offline.

Needs Python 3.11+ and the `cryptography` package, nothing else (no Baton, no database):

    python verify_evidence.py baton-evidence-42.zip [--public-key deployment.pem]

Checks, in order: the signature over every byte of the file (carried in its last 88 bytes,
the ZIP comment); the signature of manifest.json; each file against the manifest's digest
and size (read in chunks, and no further than that size: a small file can unpack to any size);
that nothing was added or removed; and the signature of the audit-chain checkpoint the package
carries. Without --public-key the key inside the package is used
and its id printed: compare it with the id your deployment publishes.
Exits 0 when the package verifies, 1 when it does not.
"""

import argparse
import base64
import hashlib
import json
import sys
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_BYTES = 88
SIGNATURE_FILES = {"manifest.json", "manifest.sig"}
# A small file can unpack to any size: the members read whole are held to what they can be,
# the others are read in chunks and held to the size their manifest gives.
SMALL_MEMBER_LIMITS = {"public_key.pem": 16 * 1024, "manifest.sig": 1024, "manifest.json": 4 * 1024 * 1024}
CHUNK_BYTES = 1024 * 1024
# What zipfile raises on damaged bytes (RuntimeError: a member flagged as encrypted).
_UNREADABLE = (
    zipfile.BadZipFile,
    KeyError,
    OSError,
    EOFError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    zlib.error,
)


class Failed(Exception):
    pass


def verify_package(path: Path, trusted_key_pem: bytes | None = None) -> dict:
    """The manifest of a package that verifies; raises Failed with the first problem found."""
    data = path.read_bytes()
    try:
        archive = zipfile.ZipFile(path)
    except _UNREADABLE as error:
        raise Failed(f"not a readable package: {error}") from error
    with archive:
        names = set(archive.namelist())
        if not {"manifest.json", "manifest.sig", "public_key.pem"} <= names:
            raise Failed("manifest.json, manifest.sig or public_key.pem is missing")
        key_pem = _read(archive, "public_key.pem")
        if trusted_key_pem is not None and _raw(_load_key(trusted_key_pem)) != _raw(_load_key(key_pem)):
            raise Failed("the package was signed with a different key than the one given")
        key = _load_key(key_pem)
        body, trailer = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
        if not _signed(key, hashlib.sha256(body).digest(), trailer):
            raise Failed("the package's bytes do not match its signature")
        manifest_bytes = _read(archive, "manifest.json")
        if not _signed(key, manifest_bytes, _read(archive, "manifest.sig")):
            raise Failed("manifest.json does not match manifest.sig")
        manifest = json.loads(manifest_bytes)
        listed = set(manifest["files"])
        if names - SIGNATURE_FILES != listed:
            raise Failed(f"files differ from the manifest: {sorted(names - SIGNATURE_FILES ^ listed)}")
        for name, expected in manifest["files"].items():
            if _digest_of(archive, name, expected["bytes"]) != (expected["sha256"], expected["bytes"]):
                raise Failed(f"{name} does not match its digest in the manifest")
        checkpoint = dict(manifest["chain_checkpoint"])
        signature = checkpoint.pop("signature")
        if not _signed(key, _canonical(checkpoint), signature.encode()):
            raise Failed("the audit-chain checkpoint's signature does not verify")
    manifest["key_id"] = hashlib.sha256(_raw(key)).hexdigest()[:16]
    return manifest


def _read(archive: zipfile.ZipFile, name: str) -> bytes:
    return b"".join(_chunks(archive, name, SMALL_MEMBER_LIMITS[name], "it can have"))


def _digest_of(archive: zipfile.ZipFile, name: str, limit: int) -> tuple[str, int]:
    """The member's sha256 and size, read no further than the `limit` its manifest gives."""
    digest, size = hashlib.sha256(), 0
    for chunk in _chunks(archive, name, limit, "its manifest gives"):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def _chunks(archive: zipfile.ZipFile, name: str, limit: int, bound_by: str) -> Iterator[bytes]:
    """The member's bytes in chunks; Failed once they pass `limit` or cannot be read."""
    size = 0
    try:
        with archive.open(name) as member:
            while chunk := member.read(CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise Failed(f"{name} unpacks to more than the {limit} bytes {bound_by}")
                yield chunk
    except _UNREADABLE as error:  # a CRC mismatch is a BadZipFile, corrupt deflate data a zlib.error
        raise Failed(f"{name} cannot be read: {error}") from error


def _load_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as error:
        raise Failed(f"not a public key: {error}") from error
    if not isinstance(key, Ed25519PublicKey):
        raise Failed("the public key is not an Ed25519 key")
    return key


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _signed(key: Ed25519PublicKey, message: bytes, signature: bytes) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, message)
    except (InvalidSignature, ValueError):
        return False
    # Base64 has spare bits in its last character: only the canonical spelling is accepted, so
    # that no byte of a signature can change without failing.
    return base64.b64encode(raw) == signature


def _canonical(statement: dict) -> bytes:
    # The checkpoint statement holds only strings and integers, for which RFC 8785 canonical
    # JSON is sorted keys without whitespace.
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a Baton evidence package offline.")
    parser.add_argument("package", type=Path)
    parser.add_argument("--public-key", type=Path, help="the deployment's public key (PEM) to trust")
    args = parser.parse_args(argv)
    try:
        trusted = args.public_key.read_bytes() if args.public_key else None
        manifest = verify_package(args.package, trusted)
    except (Failed, OSError, ValueError, KeyError) as error:
        print(f"FAILED: {args.package}: {error}")
        return 1
    print(
        f"OK: {args.package}: {manifest['runs']} run(s), scope {json.dumps(manifest['scope'])}, "
        f"signed by key {manifest['key_id']}, chain checkpoint at #{manifest['chain_checkpoint']['seq']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
