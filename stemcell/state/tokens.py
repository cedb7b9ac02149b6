"""Salted, slow hashing for per-camera bearer tokens.

A leaked state database must not hand out working camera tokens, so only a scrypt digest with a
per-token random salt is stored. The cost parameters travel inside the encoded string, so they
can be raised later without invalidating tokens already issued.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

SCHEME = "scrypt"
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


def hash_token(token: str) -> str:
    """Encode ``token`` as ``scrypt$n$r$p$salt_hex$key_hex`` with a fresh random salt."""
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


@functools.cache
def dummy_hash() -> str:
    """A hash no real token matches; checking against it when a camera is unknown or has no
    token makes that answer take as long as a wrong token, so timing does not reveal which
    camera ids exist."""
    return hash_token(secrets.token_urlsafe(32))
