"""Signing, verification, drop reasons and the replay guard, driven by byte inputs (no sockets)."""

from __future__ import annotations

import pytest

from balancier.cluster.transport import (
    MAGIC,
    Dropped,
    Envelope,
    Keyring,
    Receiver,
    SequenceGuard,
    decode,
    encode,
)

KEYS = Keyring(send_id=1, keys={1: ("sha256", b"secret-one"), 2: ("sha256", b"secret-two")})
ROTATED = Keyring(send_id=2, keys={2: ("sha256", b"secret-two")})
OTHER = Keyring(send_id=1, keys={1: ("sha256", b"not-the-secret")})
UNKNOWN_ID = Keyring(send_id=7, keys={7: ("sha256", b"secret-one")})


def env(node: str = "lb2", gen: int = 3, seq: int = 1, typ: str = "hb", cluster: str = "esup") -> Envelope:
    return Envelope(type=typ, cluster=cluster, node=node, generation=gen, seq=seq, deadtime_ms=1000,
                    payload={"dc": "lb1", "v": [0, 1, 2]})


def test_round_trip_and_mac_covers_every_byte() -> None:
    data = encode(env(), KEYS)
    assert data.startswith(MAGIC) and data[4] == 1
    assert decode(data, KEYS) == env()
    # flipping any single byte of the message (header, body or MAC) is detected
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(Dropped) as exc:
            decode(bytes(bad), KEYS)
        assert exc.value.reason in {"malformed", "unknown_key", "bad_signature"}


def test_rotation_sign_with_auth_key_accept_any_listed() -> None:
    assert decode(encode(env(), ROTATED), KEYS) == env()
    with pytest.raises(Dropped) as exc:
        decode(encode(env(), KEYS), ROTATED)  # key 1 no longer listed there
    assert exc.value.reason == "unknown_key"


def test_sha1_method_is_accepted_with_its_own_digest_size() -> None:
    k = Keyring(send_id=3, keys={3: ("sha1", b"legacy")})
    data = encode(env(), k)
    assert len(data) - data.rindex(b"}") - 1 == 20
    assert decode(data, k) == env()


@pytest.mark.parametrize("data,reason", [
    (b"", "malformed"),
    (b"XXXX\x01{}" + bytes(32), "malformed"),
    (MAGIC + b"\x01not json" + bytes(32), "bad_signature"),
])
def test_garbage_is_dropped(data: bytes, reason: str) -> None:
    with pytest.raises(Dropped) as exc:
        decode(data, KEYS)
    assert exc.value.reason == reason


def test_signed_but_malformed_body() -> None:
    import hashlib
    import hmac

    head = MAGIC + b"\x01" + b'{"t":"hb"}'
    data = head + hmac.new(b"secret-one", head, hashlib.sha256).digest()
    with pytest.raises(Dropped) as exc:
        decode(data, KEYS)
    assert exc.value.reason == "malformed"


GUARD_STEPS = [
    # (node, generation, seq, expected reason or None)
    ("lb2", 3, 1, None),
    ("lb2", 3, 2, None),
    ("lb2", 3, 2, "duplicate"),       # second copy (other medium)
    ("lb2", 3, 5, None),
    ("lb2", 3, 4, None),              # reordered, not seen yet
    ("lb2", 3, 4, "replay"),          # seen already
    ("lb2", 3, 1, "replay"),
    ("lb2", 2, 99, "old_generation"),
    ("lb2", 4, 0, None),              # restart: tracking reset
    ("lb2", 4, 0, "duplicate"),
    ("lb2", 3, 6, "old_generation"),
    ("lb3", 1, 10, None),             # senders are independent
]


def test_sequence_guard_table() -> None:
    g = SequenceGuard()
    got = [g.check(n, gen, seq) for n, gen, seq, _ in GUARD_STEPS]
    assert got == [r for *_, r in GUARD_STEPS]


def test_guard_knows_generations_from_before_our_restart() -> None:
    g = SequenceGuard({"lb2": 5})
    assert g.check("lb2", 4, 100) == "old_generation"
    assert g.check("lb2", 5, 1) is None


def test_receiver_counts_every_reason() -> None:
    r = Receiver("esup", "lb1", {"lb1", "lb2", "lb3"}, KEYS)
    good = encode(env(seq=1), KEYS)
    assert r.accept(good) == env(seq=1)
    assert r.accept(good) is None  # same packet again
    assert r.accept(encode(env(seq=2), KEYS)) is not None
    assert r.accept(good) is None  # captured packet replayed later
    assert r.accept(encode(env(seq=3), OTHER)) is None  # forged with the wrong secret
    assert r.accept(encode(env(seq=4), UNKNOWN_ID)) is None
    assert r.accept(encode(env(node="intruder"), KEYS)) is None
    assert r.accept(encode(env(cluster="other"), KEYS)) is None
    assert r.accept(encode(env(gen=2, seq=50), KEYS)) is None
    assert r.accept(b"junk") is None
    assert r.accept(encode(env(node="lb1", seq=9), KEYS)) is None  # our own broadcast: ignored, not counted
    assert r.drops == {"malformed": 1, "unknown_key": 1, "bad_signature": 1, "wrong_cluster": 1,
                       "unknown_node": 1, "old_generation": 1, "duplicate": 1, "replay": 1}
