"""Encryption of secrets we must store ourselves (OAuth refresh tokens, per-company credentials).

Key: INTEGRATIONS_FERNET_KEY, one or more Fernet keys separated by commas. The first encrypts;
all decrypt, so a key can be rotated by putting the new one first and re-saving. `make up`
generates one per checkout; deployments set it like any other secret.
"""
from __future__ import annotations

import os

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

KEY_ENV = "INTEGRATIONS_FERNET_KEY"


class EncryptionError(RuntimeError):
    pass


def _box() -> MultiFernet:
    raw = os.environ.get(KEY_ENV, "").strip()
    if not raw:
        raise EncryptionError(f"{KEY_ENV} is not set: stored secrets cannot be encrypted or read")
    try:
        return MultiFernet([Fernet(key.strip()) for key in raw.split(",") if key.strip()])
    except ValueError:
        raise EncryptionError(f"{KEY_ENV} holds an invalid Fernet key (32 url-safe base64 bytes expected)") from None


def encrypt(plaintext: str) -> bytes:
    return _box().encrypt(plaintext.encode())


def decrypt(ciphertext: bytes) -> str:
    try:
        return _box().decrypt(bytes(ciphertext)).decode()
    except InvalidToken:
        raise EncryptionError(f"a stored secret cannot be decrypted with {KEY_ENV}: was the key changed?") from None
