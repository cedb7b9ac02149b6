"""Per-camera bearer tokens: stored as a keyed HMAC, checked in the ingress replicas.

A leaked state database must not hand out working camera tokens, so only a digest is stored. Tokens
are 256-bit random (`new_token`), so a slow hash buys nothing against guessing, and it cost the
store 40-90 ms per check (a replica missing its cache ran scrypt in the store: ~25 checks/s for a
whole fleet). So a token is stored as ``hmac-sha256$<hex>``: HMAC-SHA256 under the store's random
key of the camera id and the token (the camera id salts it: one token on two cameras differs).
Replicas hold the key and every camera's MAC (`stemcell.state.control.TokenTable`) and check a
token in microseconds, comparing in constant time. Databases written before keep their
``scrypt$...`` hashes: those still verify (slowly, in the store) and are rewritten as HMACs on their
first successful check (`StateStore.verify_camera_token`), since only then is the raw token known.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

SCHEME = "scrypt"  # legacy hashes (migrated to HMAC on their first successful check)
HMAC_SCHEME = "hmac-sha256"
KEY_BYTES_HMAC = 32  # the store's HMAC key
SCRYPT_N = 2**14  # CPU/memory cost: ~16 MiB and tens of milliseconds per check
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MIN_TOKEN_CHARS = 16  # shorter secrets are guessable even through a slow hash
MAX_TOKEN_CHARS = 1024  # bounds the work an unauthenticated caller can make us do


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe) for an admin to hand to a camera."""
    return secrets.token_urlsafe(32)


def _check_token(token: object) -> str:
    if not isinstance(token, str) or not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        raise ValueError(
            f"invalid token: expected a string of {MIN_TOKEN_CHARS}-{MAX_TOKEN_CHARS} characters"
        )
    return token


def _derive(token: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(token.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES)


def new_key() -> bytes:
    """A fresh HMAC key for a new database."""
    return secrets.token_bytes(KEY_BYTES_HMAC)


def token_mac(key: bytes, camera_id: str, token: str) -> str:
    """``hmac-sha256$<hex>`` of (camera id, token) under ``key``: what the store keeps for a token."""
    message = camera_id.encode("utf-8") + b"\x00" + _check_token(token).encode("utf-8")
    return f"{HMAC_SCHEME}${hmac.new(key, message, hashlib.sha256).hexdigest()}"


def is_legacy(encoded: str) -> bool:
    """True for a hash from before HMAC tokens (scrypt), which only the store can check."""
    return not encoded.startswith(HMAC_SCHEME + "$")


def hash_token(token: str) -> str:
    """Encode ``token`` as ``scrypt$n$r$p$salt_hex$key_hex`` with a fresh random salt (legacy format,
    kept so databases and tests holding such hashes can be checked and migrated)."""
    salt = secrets.token_bytes(SALT_BYTES)
    key = _derive(_check_token(token), salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"{SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def verify_token(token: str, encoded: str) -> bool:
    """True iff ``token`` hashes to ``encoded``; the final comparison is constant-time."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        return False
    scheme, n, r, p, salt_hex, key_hex = encoded.split("$")
    if scheme != SCHEME:
        raise ValueError(f"unknown token hash scheme {scheme!r}")
    key = _derive(token, bytes.fromhex(salt_hex), int(n), int(r), int(p))
    return hmac.compare_digest(key, bytes.fromhex(key_hex))
