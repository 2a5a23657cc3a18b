"""Reliable, ordered delivery of cluster messages over the authenticated datagrams (pure).

Heartbeats may be lost; CIB copies, requests and results may not. This layer gives each ordered
pair of nodes a stream with the guarantees TCP would give, but over the same signed UDP channel
(one port, one key, one replay guard, no connection set-up to fail separately):

- A message (any JSON-able dict) is serialized and cut into fragments of at most
  :data:`FRAGMENT_CHARS` characters, so a datagram never needs IP fragmentation (one lost IP
  fragment would lose the whole datagram). A message may be up to :data:`MAX_MESSAGE_CHARS`.
- Every fragment has a sequence number in the stream; at most :data:`WINDOW` are in flight.
- The receiver acknowledges every data frame with the highest in-order sequence number and the set of
  out-of-order numbers it holds (selective ack); it delivers messages strictly in order.
- An unacknowledged fragment is retransmitted after ``rto`` seconds, doubling up to ``rto_max``.
  With 20% loss each way a fragment needs on average 1.6 tries; the stream never gives up by
  itself: the membership decides when a peer is dead and the daemon then calls :meth:`reset`.
- A stream belongs to one incarnation of each side. Frames carry the receiver's generation the
  sender believed (``to``); the receiver ignores frames meant for an earlier incarnation of itself,
  and a frame under a newer generation of the sender resets what it received so far.

Frames are dicts carried as the payload of an envelope of type ``rel``:
``{"k": "d", "dst": peer, "to": gen, "q": seq, "m": 1|0, "d": chunk}`` (data; ``m`` = more fragments
follow) and ``{"k": "a", "dst": peer, "to": gen, "q": cumulative, "s": [seqs]}`` (ack).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FRAGMENT_CHARS = 1200
MAX_MESSAGE_CHARS = 1 << 20
WINDOW = 64

Frame = dict[str, Any]
Outgoing = list[tuple[str, Frame]]  # (peer, frame) to send


class MessageTooLarge(ValueError):
    pass


@dataclass
class _InFlight:
    frame: Frame
    due: float
    rto: float
    tries: int = 1


@dataclass
class _SendStream:
    peer_generation: int
    next_seq: int = 0
    unacked: dict[int, _InFlight] = field(default_factory=dict)
    queue: list[Frame] = field(default_factory=list)  # waiting for room in the window


@dataclass
class _RecvStream:
    sender_generation: int
    expected: int = 0
    held: dict[int, Frame] = field(default_factory=dict)  # out of order, waiting for the gap
    chunks: list[str] = field(default_factory=list)  # fragments of the message being rebuilt


class Reliable:
    """Streams from this node (generation ``my_generation``) to and from each peer."""

    def __init__(self, me: str, my_generation: int, *, rto: float = 0.2, rto_max: float = 2.0,
                 window: int = WINDOW) -> None:
        self.me = me
        self.my_generation = my_generation
        self.rto = rto
        self.rto_max = rto_max
        self.window = window
        self._send: dict[str, _SendStream] = {}
        self._recv: dict[str, _RecvStream] = {}
        self.retransmissions = 0
        self.delivered = 0

    # ---- sending ------------------------------------------------------------------------------

    def send(self, peer: str, peer_generation: int, message: dict[str, Any], now: float) -> Outgoing:
        """Queue ``message`` for ``peer`` (whose current generation is ``peer_generation``)."""
        text = json.dumps(message, separators=(",", ":"), sort_keys=True, ensure_ascii=True)
        if len(text) > MAX_MESSAGE_CHARS:
            raise MessageTooLarge(f"message of {len(text)} bytes exceeds {MAX_MESSAGE_CHARS}")
        stream = self._send.get(peer)
        if stream is None or stream.peer_generation != peer_generation:
            stream = self._send[peer] = _SendStream(peer_generation)
        chunks = [text[i:i + FRAGMENT_CHARS] for i in range(0, len(text), FRAGMENT_CHARS)] or [""]
        for i, chunk in enumerate(chunks):
            frame = {"k": "d", "dst": peer, "to": peer_generation, "q": stream.next_seq,
                     "m": 1 if i < len(chunks) - 1 else 0, "d": chunk}
            stream.next_seq += 1
            stream.queue.append(frame)
        return [(peer, f) for f in self._fill_window(stream, now)]

    def _fill_window(self, stream: _SendStream, now: float) -> list[Frame]:
        out: list[Frame] = []
        while stream.queue and len(stream.unacked) < self.window:
            frame = stream.queue.pop(0)
            stream.unacked[frame["q"]] = _InFlight(frame, now + self.rto, self.rto)
            out.append(frame)
        return out

    def poll(self, now: float) -> Outgoing:
        """Frames whose retransmission timer expired (call at :meth:`next_timer`)."""
        out: Outgoing = []
        for peer, stream in self._send.items():
            for seq in sorted(stream.unacked):
                item = stream.unacked[seq]
                if item.due <= now:
                    item.rto = min(item.rto * 2, self.rto_max)
                    item.due = now + item.rto
                    item.tries += 1
                    self.retransmissions += 1
                    out.append((peer, item.frame))
        return out

    def next_timer(self) -> float | None:
        dues = [i.due for s in self._send.values() for i in s.unacked.values()]
        return min(dues) if dues else None

    def pending(self, peer: str) -> int:
        """Fragments not yet acknowledged by ``peer`` (in flight or queued)."""
        stream = self._send.get(peer)
        return 0 if stream is None else len(stream.unacked) + len(stream.queue)

    def reset(self, peer: str) -> None:
        """Forget both streams with ``peer`` (it died or restarted)."""
        self._send.pop(peer, None)
        self._recv.pop(peer, None)

    # ---- receiving ----------------------------------------------------------------------------

    def receive(self, peer: str, peer_generation: int, frame: Frame, now: float
                ) -> tuple[list[dict[str, Any]], Outgoing]:
        """Handle one frame from ``peer``; return the messages now deliverable and frames to send."""
        try:
            kind, to, seq = frame["k"], frame["to"], frame["q"]
        except (KeyError, TypeError):
            return [], []
        if frame.get("dst") != self.me or to != self.my_generation or type(seq) is not int:
            return [], []  # for another node or for an earlier incarnation of this one
        if kind == "a":
            return [], self._on_ack(peer, peer_generation, seq, frame.get("s") or [], now)
        if kind != "d":
            return [], []
        stream = self._recv.get(peer)
        if stream is None or stream.sender_generation != peer_generation:
            stream = self._recv[peer] = _RecvStream(peer_generation)
        delivered: list[dict[str, Any]] = []
        if stream.expected <= seq < stream.expected + self.window:
            stream.held[seq] = frame
            while stream.expected in stream.held:
                f = stream.held.pop(stream.expected)
                stream.expected += 1
                stream.chunks.append(str(f.get("d", "")))
                if len(stream.chunks) * FRAGMENT_CHARS > MAX_MESSAGE_CHARS + FRAGMENT_CHARS:
                    stream.chunks = []  # larger than any sender may send: never buffer without bound
                    continue
                if not f.get("m"):
                    text = "".join(stream.chunks)
                    stream.chunks = []
                    try:
                        message = json.loads(text)
                    except ValueError:
                        continue  # cannot happen with an authenticated sender; never crash on it
                    if isinstance(message, dict):
                        delivered.append(message)
                        self.delivered += 1
        ack = {"k": "a", "dst": peer, "to": peer_generation, "q": stream.expected - 1,
               "s": sorted(stream.held)[: self.window]}
        return delivered, [(peer, ack)]

    def _on_ack(self, peer: str, peer_generation: int, cumulative: int, selective: list[Any],
                now: float) -> Outgoing:
        stream = self._send.get(peer)
        if stream is None or stream.peer_generation != peer_generation:
            return []
        for seq in [s for s in stream.unacked if s <= cumulative]:
            del stream.unacked[seq]
        for seq in selective:
            if isinstance(seq, int):
                stream.unacked.pop(seq, None)
        return [(peer, f) for f in self._fill_window(stream, now)]
