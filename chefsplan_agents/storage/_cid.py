"""Content identifiers: parse, validate and encode the CIDs this package produces.

Only what IPFS's UnixFS importer emits is accepted: sha2-256 multihashes under CIDv0
(``Qm…``, base58btc, dag-pb) or CIDv1 with the ``raw`` (0x55) or ``dag-pb`` (0x70) codec.
CIDv1 is written in lower-case base32 (``b…``); upper-case base32 (``B…``) and base58btc
(``z…``) are read too. Everything else is an :class:`~chefsplan_agents.errors.InvalidCid`
with a one-line reason.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from chefsplan_agents.errors import InvalidCid

__all__ = ["CODEC_DAG_PB", "CODEC_RAW", "Cid", "parse_cid"]

CODEC_RAW = 0x55
CODEC_DAG_PB = 0x70
_SHA2_256 = 0x12
_DIGEST_LEN = 32
_CODEC_NAMES = {CODEC_RAW: "raw", CODEC_DAG_PB: "dag-pb"}

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {ch: i for i, ch in enumerate(_B58_ALPHABET)}
_B32_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz234567")
# A CID string longer than this is not one we could have produced; refuse before decoding.
_MAX_CID_CHARS = 128


def _b58encode(data: bytes) -> str:
    num = int.from_bytes(data, "big")
    out = []
    while num:
        num, rem = divmod(num, 58)
        out.append(_B58_ALPHABET[rem])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    num = 0
    for ch in text:
        idx = _B58_INDEX.get(ch)
        if idx is None:
            raise ValueError(f"{ch!r} is not a base58btc character")
        num = num * 58 + idx
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _b32decode(text: str) -> bytes:
    if not set(text) <= _B32_CHARS:
        raise ValueError("not lower-case base32")
    return base64.b32decode(text.upper() + "=" * (-len(text) % 8))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


@dataclass(frozen=True, slots=True)
class Cid:
    """A parsed CID: version, codec and the sha2-256 digest it names.

    Attributes:
        version: 0 or 1.
        codec: ``CODEC_RAW`` or ``CODEC_DAG_PB`` (always dag-pb for version 0).
        digest: The 32-byte sha2-256 digest of the block.
    """

    version: int
    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise InvalidCid(f"CID version {self.version} is not supported (use 0 or 1)")
        if self.codec not in _CODEC_NAMES:
            raise InvalidCid(f"CID codec 0x{self.codec:x} is not supported (use raw or dag-pb)")
        if self.version == 0 and self.codec != CODEC_DAG_PB:
            raise InvalidCid("a CIDv0 always names a dag-pb block")
        if len(self.digest) != _DIGEST_LEN:
            raise InvalidCid(f"a sha2-256 digest has 32 bytes, not {len(self.digest)}")

    @classmethod
    def for_block(cls, block: bytes, *, version: int, codec: int) -> Cid:
        """The CID of ``block`` (hashed with sha2-256)."""
        return cls(version, codec, hashlib.sha256(block).digest())

    @classmethod
    def from_bytes(cls, data: bytes) -> Cid:
        """Parse a binary CID (as found in dag-pb links).

        Raises:
            InvalidCid: The bytes are not a supported CID.
        """
        if len(data) == 34 and data[0] == _SHA2_256 and data[1] == _DIGEST_LEN:
            return cls(0, CODEC_DAG_PB, bytes(data[2:]))
        try:
            version, pos = _read_varint(data, 0)
            codec, pos = _read_varint(data, pos)
            mh_code, pos = _read_varint(data, pos)
            mh_len, pos = _read_varint(data, pos)
        except ValueError as err:
            raise InvalidCid(f"binary CID {data.hex()[:80]} is truncated") from err
        if version != 1:
            raise InvalidCid(f"binary CID has version {version}; only CIDv0 and CIDv1 exist")
        if mh_code != _SHA2_256 or mh_len != _DIGEST_LEN:
            raise InvalidCid(f"CID hash 0x{mh_code:x} is not supported (only sha2-256)")
        if len(data) - pos != _DIGEST_LEN:
            raise InvalidCid("binary CID has a digest of the wrong length")
        return cls(1, codec, bytes(data[pos:]))

    @property
    def multihash(self) -> bytes:
        """The multihash (``0x12 0x20`` + digest): what a blockstore keys blocks by."""
        return bytes((_SHA2_256, _DIGEST_LEN)) + self.digest

    @property
    def codec_name(self) -> str:
        """``"raw"`` or ``"dag-pb"``."""
        return _CODEC_NAMES[self.codec]

    def to_bytes(self) -> bytes:
        """The binary form, as written into dag-pb links."""
        if self.version == 0:
            return self.multihash
        return bytes((1, self.codec)) + self.multihash

    def encode(self) -> str:
        """The string form: base58btc for CIDv0, base32 (``b…``) for CIDv1."""
        if self.version == 0:
            return _b58encode(self.multihash)
        return "b" + _b32encode(self.to_bytes())

    def matches(self, block: bytes) -> bool:
        """Whether ``block`` hashes to this CID's digest."""
        return hashlib.sha256(block).digest() == self.digest

    def __str__(self) -> str:
        return self.encode()


def parse_cid(text: str | Cid) -> Cid:
    """Parse and validate a CID string.

    Args:
        text: ``Qm…`` (CIDv0), ``b…`` (CIDv1 base32) or ``z…`` (CIDv1 base58btc); a
            :class:`Cid` is returned as is.

    Returns:
        The parsed CID.

    Raises:
        InvalidCid: ``text`` is not a string, is not a CID, or uses a hash or codec this
            package does not support.
    """
    if isinstance(text, Cid):
        return text
    if not isinstance(text, str):
        raise InvalidCid(f"a CID is a string, not {type(text).__name__}")
    shown = text if len(text) <= 64 else text[:61] + "..."
    if not text or len(text) > _MAX_CID_CHARS or text != text.strip():
        raise InvalidCid(f"{shown!r} is not a CID; expected Qm… or bafy…/bafk…")
    try:
        if len(text) == 46 and text.startswith("Qm"):
            raw = _b58decode(text)
            if len(raw) != 34 or raw[:2] != bytes((_SHA2_256, _DIGEST_LEN)):
                raise ValueError("not a sha2-256 multihash")
            return Cid(0, CODEC_DAG_PB, raw[2:])
        if text[0] == "b":
            return Cid.from_bytes(_b32decode(text[1:]))
        if text[0] == "B" and text[1:].isupper():
            return Cid.from_bytes(_b32decode(text[1:].lower()))
        if text[0] == "z":
            return Cid.from_bytes(_b58decode(text[1:]))
    except InvalidCid as err:
        raise InvalidCid(f"{shown!r} is not a supported CID: {err}") from err
    except ValueError as err:
        raise InvalidCid(f"{shown!r} is not a CID ({err}); expected Qm… or bafy…/bafk…") from err
    raise InvalidCid(f"{shown!r} is not a CID; expected Qm… or bafy…/bafk…")
