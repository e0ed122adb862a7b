"""age keys (https://age-encryption.org/v1) for sops, made without the age-keygen program.

An age identity is an X25519 private key written as Bech32 (BIP 173) with the prefix
``AGE-SECRET-KEY-`` (upper case); its recipient is the X25519 public key in Bech32 with the prefix
``age``. A key file has age-keygen's layout: ``# created:`` and ``# public key:`` comments, then the
identity on a line of its own. A new key file is created 0600 and never replaces an existing file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from hubploy.errors import SecretsError
from hubploy.runner import register_secret

IDENTITY_PREFIX = "age-secret-key-"
RECIPIENT_PREFIX = "age"
_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_IDENTITY_LINE = re.compile(r"^AGE-SECRET-KEY-1[0-9A-Z]+$")
_RECIPIENT = re.compile(r"^age1[02-9ac-hj-np-z]{58}$")


@dataclass(frozen=True)
class AgeKey:
    identity: str = field(repr=False)  # AGE-SECRET-KEY-1...
    recipient: str  # age1...


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for bit, generator in enumerate(_GENERATOR):
            checksum ^= generator if (top >> bit) & 1 else 0
    return checksum


def _expand(prefix: str) -> list[int]:
    return [ord(c) >> 5 for c in prefix] + [0] + [ord(c) & 31 for c in prefix]


def _to_5_bits(data: bytes) -> list[int]:
    accumulator, bits, out = 0, 0, []
    for byte in data:
        accumulator, bits = accumulator << 8 | byte, bits + 8
        while bits >= 5:
            bits -= 5
            out.append(accumulator >> bits & 31)
    if bits:
        out.append(accumulator << (5 - bits) & 31)
    return out


def _from_5_bits(words: list[int]) -> bytes:
    accumulator, bits, out = 0, 0, bytearray()
    for word in words:
        accumulator, bits = accumulator << 5 | word, bits + 5
        if bits >= 8:
            bits -= 8
            out.append(accumulator >> bits & 255)
    if bits >= 5 or accumulator & ((1 << bits) - 1):
        raise ValueError("non-zero padding")
    return bytes(out)


def bech32_encode(prefix: str, data: bytes) -> str:
    """``data`` in Bech32 with the lower-case ``prefix`` (without the length limit: age ignores it)."""
    words = _to_5_bits(data)
    checksum = _polymod(_expand(prefix) + words + [0] * 6) ^ 1
    words += [checksum >> 5 * (5 - i) & 31 for i in range(6)]
    return prefix + "1" + "".join(_CHARSET[w] for w in words)


def bech32_decode(prefix: str, text: str) -> bytes:
    """The data of a Bech32 string with ``prefix`` (either case); ValueError when it is not one."""
    text = text.lower()
    head, separator, body = text.rpartition("1")
    if not separator or head != prefix or len(body) < 6 or any(c not in _CHARSET for c in body):
        raise ValueError(f"not a Bech32 string with prefix {prefix!r}")
    words = [_CHARSET.index(c) for c in body]
    if _polymod(_expand(prefix) + words) != 1:
        raise ValueError("bad checksum")
    return _from_5_bits(words[:-6])


def _key_of(private: X25519PrivateKey) -> AgeKey:
    secret = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    identity = bech32_encode(IDENTITY_PREFIX, secret).upper()
    register_secret(identity)
    return AgeKey(identity, bech32_encode(RECIPIENT_PREFIX, public))


def generate_key() -> AgeKey:
    return _key_of(X25519PrivateKey.generate())


def key_from_identity(identity: str) -> AgeKey:
    """The key (with its recipient) of an ``AGE-SECRET-KEY-1...`` identity; SecretsError if it is not one."""
    try:
        secret = bech32_decode(IDENTITY_PREFIX, identity.strip())
        if len(secret) != 32:
            raise ValueError("not 32 bytes")
    except ValueError:
        raise SecretsError("not an age identity (AGE-SECRET-KEY-1...)") from None
    return _key_of(X25519PrivateKey.from_private_bytes(secret))


def is_recipient(text: str) -> bool:
    """Whether ``text`` is an X25519 age recipient (``age1`` and 58 Bech32 characters, valid checksum)."""
    if not _RECIPIENT.match(text):
        return False
    try:
        return len(bech32_decode(RECIPIENT_PREFIX, text)) == 32
    except ValueError:
        return False


def read_key_file(path: Path) -> AgeKey:
    """The first identity of an age key file; SecretsError naming the file when it has none."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise SecretsError(f"{path}: cannot read the age key file: {exc.strerror}") from None
    identity = next((line.strip() for line in lines if _IDENTITY_LINE.match(line.strip())), None)
    if identity is None:
        raise SecretsError(
            f"{path}: no age identity (a line AGE-SECRET-KEY-1...) in it",
            hint="give another --age-key-file, or --age-recipient for a key you have",
        )
    try:
        return key_from_identity(identity)
    except SecretsError as exc:
        raise SecretsError(f"{path}: {exc.message}") from None


def write_key_file(path: Path, key: AgeKey) -> None:
    """Write ``key`` to a new file ``path`` (0600; its directory made 0700 when missing) in age-keygen's
    layout; SecretsError if the file exists."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = f"# created: {created}\n# public key: {key.recipient}\n{key.identity}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SecretsError(f"{path} already exists; hubploy never replaces a key file") from None
    except OSError as exc:
        raise SecretsError(f"{path}: cannot create the age key file: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
