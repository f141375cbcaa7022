from __future__ import annotations

from typing import Any

import pytest

from chefsplan_agents.errors import InvalidCid
from chefsplan_agents.storage import Cid, parse_cid
from chefsplan_agents.storage._cid import CODEC_DAG_PB, CODEC_RAW

EMPTY_RAW = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
EMPTY_SHA256 = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")


def test_parse_v1_raw() -> None:
    cid = parse_cid(EMPTY_RAW)
    assert (cid.version, cid.codec, cid.digest) == (1, CODEC_RAW, EMPTY_SHA256)
    assert cid.codec_name == "raw"
    assert str(cid) == EMPTY_RAW
    assert cid.matches(b"")
    assert not cid.matches(b"x")


def test_every_vector_round_trips(cid_vectors: list[dict[str, Any]]) -> None:
    for vector in cid_vectors:
        for key, version in (("cidv1", 1), ("cidv0", 0)):
            cid = parse_cid(vector[key])
            assert cid.version == version
            assert cid.encode() == vector[key]
            assert Cid.from_bytes(cid.to_bytes()) == cid


def test_v0_is_dag_pb_base58() -> None:
    cid = parse_cid("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")
    assert (cid.version, cid.codec) == (0, CODEC_DAG_PB)
    assert cid.to_bytes() == cid.multihash
    assert cid.multihash[:2] == b"\x12\x20"


def test_other_multibases_normalise_to_base32() -> None:
    cid = parse_cid(EMPTY_RAW)
    assert parse_cid("B" + EMPTY_RAW[1:].upper()) == cid
    # zb2rh… is how some daemons print the same CIDv1 in base58btc.
    from chefsplan_agents.storage._cid import _b58encode

    assert parse_cid("z" + _b58encode(cid.to_bytes())) == cid


def test_cid_object_passes_through() -> None:
    cid = parse_cid(EMPTY_RAW)
    assert parse_cid(cid) is cid


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a CID"),
        ("bafy", "not a CID"),
        ("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQ0", "base58btc"),  # '0' is not base58
        ("Qm" + "z" * 44, "not a CID"),
        ("bafkrei" + "!" * 52, "not a CID"),
        (EMPTY_RAW[:-3], "is not a"),
        (EMPTY_RAW + "aa", "wrong length"),
        ("x" * 500, "not a CID"),
        (" " + EMPTY_RAW, "not a CID"),
        # dag-cbor (0x71) and sha2-512: real CIDs, but nothing this package produces.
        ("bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", "codec 0x71"),
        ("bafkrgqg5ijjrnc2esrpbbjodjxq3u3m2hufzdxwfmnuzm4rdwq2k3", "not a"),
    ],
)
def test_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidCid, match=reason) as info:
        parse_cid(text)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_not_a_string() -> None:
    with pytest.raises(InvalidCid, match="not bytes"):
        parse_cid(b"Qm")  # type: ignore[arg-type]


def test_binary_cid_errors() -> None:
    with pytest.raises(InvalidCid, match="truncated"):
        Cid.from_bytes(b"\x01")
    with pytest.raises(InvalidCid, match="version 2"):
        Cid.from_bytes(b"\x02\x55\x12\x20" + bytes(32))
    with pytest.raises(InvalidCid, match="only sha2-256"):
        Cid.from_bytes(b"\x01\x55\x13\x40" + bytes(64))
    with pytest.raises(InvalidCid, match="wrong length"):
        Cid.from_bytes(b"\x01\x55\x12\x20" + bytes(31))


def test_constructor_validates() -> None:
    with pytest.raises(InvalidCid, match="dag-pb"):
        Cid(0, CODEC_RAW, bytes(32))
    with pytest.raises(InvalidCid, match="32 bytes"):
        Cid(1, CODEC_RAW, bytes(20))
