"""Connection-per-request sides of HTTP streams on an epoll set of our own, nested in the event loop.

Why: with a client and a server connection per request (`option httpclose`), the event loop's own transports
cost more than the proxy's work. Measured per request under wrk (strace, bench/PERF.md seventh pass): on uvloop
21 syscalls, here 14.5 (getsockname and getpeername on every new uvloop transport, TCP_NODELAY again on every
accepted socket, SO_ERROR after every connect, io_uring flushes of its epoll changes, a loop turn per request);
balancier's CPU per `option httpclose` request fell by a fifth. 13.2 since a connect sends the request with it
(eighth pass). Keep-alive sides stay on the loop's transports:
per event, uvloop's C costs fewer instructions than a transport in Python.

Where it is used: the listeners of HTTP frontends with `option httpclose` (runtime.py), and plain connections
to servers when the route closes them after each response (httpclose, http-server-close; serverside.py).
`BALANCIER_RAWIO=0` in the environment leaves everything to the loop (for A/B measurements).

Rules:
- One `Layer` per event loop: an `select.epoll` set whose descriptor is the only thing the loop watches for these
  connections (`add_reader`). When it is readable, `_drain` polls it without waiting and calls each ready object's
  `on_event(events)`. Timers, TLS, TCP mode, the stats socket, checks and logs stay the loop's.
- `RawTransport` is the transport the HTTP stream and the server connection already speak to (asyncio's interface,
  the part they use): `write` (written at once when nothing is queued; the rest is queued and sent when the
  socket is writable), `pause_reading`/`resume_reading`, `close` (after the queue is flushed), `abort`,
  `is_closing`, `set_write_buffer_limits`/`get_write_buffer_size` with `pause_writing`/`resume_writing` on the
  protocol past the high-water mark and back under the low one, `get_extra_info("peername"|"sockname")`.
  As with asyncio's transports, `connection_lost` is never called inside `close()`: a transport torn down while
  the layer handles its events hears it once those events are done (the end of `_drain`, so without a loop
  callback per connection), one torn down from elsewhere on a later loop turn. End of input calls
  `eof_received()` and closes unless it returns True; a read or write error ends the connection with
  `connection_lost(exc)`.
- The epoll interest follows the state: readable while reading is wanted, writable while bytes are queued. A
  descriptor with no interest is taken out of the set, so a peer's reset while reading is paused cannot make
  the loop spin (the next write or resume finds it).
- `RawServer` accepts from a listening socket (as many as are waiting, at most `ACCEPT_BATCH` per turn), makes the
  accepted socket non-blocking and gives it a transport and a protocol from the listener's factory. `pause()`
  takes the listening descriptor out of the set: clients wait in the kernel backlog, as with uvloop's server.
  Accepted sockets inherit TCP_NODELAY from the listening socket (set once, when the RawServer is made).
- `RawConnect` opens a server connection: a non-blocking socket with TCP_NODELAY and `connect`; then the first
  bytes (the request) are written at once, which succeeds when the handshake is already over (loopback), and
  the transport registers for reading. A write that finds the connect in progress waits for one epoll report of
  writability (SO_ERROR read only when it says error or hang-up), then the transport takes the same epoll entry.
  Cancelled while waiting, it closes its socket. Host names were resolved when the configuration was loaded; a
  host that is not an address literal is left to the loop (`literal_family`).
- A protocol callback that raises is reported to the loop's exception handler and its connection aborted; the
  other ready connections are still served.
"""

from __future__ import annotations

import _socket
import asyncio
import errno
import fcntl
import os
import select
import socket
import termios
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

# The proxy's write buffer limits, for every transport (pool.py and stream.py set them on the loop's): past
# HIGH_WATER queued bytes the other side of the stream stops being read, below LOW_WATER it is read again.
# RawTransport starts with them.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR, select.EPOLLHUP
EPOLLONESHOT = select.EPOLLONESHOT
_IN_ERR_HUP = EPOLLIN | EPOLLERR | EPOLLHUP  # int | int is not specialised by the interpreter: made once here
_ERR_HUP = EPOLLERR | EPOLLHUP
_OUT_ONESHOT = EPOLLOUT | EPOLLONESHOT
READ_SIZE = 256 * 1024  # what one read asks for (uvloop reads 256 KiB at a time too)
ACCEPT_BATCH = 64  # accepts per readable event of a listener, so one busy listener cannot starve the loop
POLL_EVENTS = 512  # events taken per drain; more stay ready for the next turn
# non-blocking mode for an accepted socket: ioctl(FIONBIO) with a mutable buffer. fcntl.fcntl(fd, F_SETFL,
# O_NONBLOCK) does the same in one syscall too, but CPython's fcntl first tries its argument as a buffer and
# formats a TypeError before taking it as an int: ~3.4k more instructions per connection (measured, callgrind)
_FIONBIO = termios.FIONBIO
_ON = bytearray((1, 0, 0, 0))  # a non-zero int in either byte order; mutable, so ioctl takes it as a buffer at once
_ioctl = fcntl.ioctl
_AGAIN = (BlockingIOError, InterruptedError)
_read, _write, _close = os.read, os.write, os.close
_new_socket = _socket.socket  # the C socket type: no socket.py layer per connection
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_IPPROTO_TCP, _TCP_NODELAY, _SOL_SOCKET, _SO_ERROR = (socket.IPPROTO_TCP, socket.TCP_NODELAY, socket.SOL_SOCKET,
                                                      socket.SO_ERROR)
_EINPROGRESS = errno.EINPROGRESS
_new_object = object.__new__


class Layer:
    """The epoll set of one event loop, and the objects its descriptors belong to."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ep = select.epoll()
        self._poll = self.ep.poll
        self.table: dict[int, Any] = {}  # fd -> object with on_event(events)
        loop.add_reader(self.ep.fileno(), self._drain)
        self.closed = False
        # transports torn down during a drain: their connection_lost is called when the drain's events are done
        # (after the callback that closed them returned, as a later loop turn would), without a loop callback each
        self.lost: list[tuple[RawTransport, BaseException | None]] | None = None

    def _drain(self) -> None:
        table = self.table
        lost = self.lost = []
        try:
            for fd, ev in self._poll(0, POLL_EVENTS):
                try:
                    obj = table[fd]  # a subscript, not .get(): a method call less per event
                except KeyError:  # torn down by an earlier event of this batch
                    continue
                try:
                    obj.on_event(ev)
                except Exception as exc:  # a protocol's bug: report it, end that connection, serve the others
                    self._report(exc, obj)
            for tr, why in lost:  # in order; a connection_lost may tear down more transports: they join the list
                protocol = tr.protocol  # RawTransport._lost, written out
                if protocol is not None:
                    tr.protocol = None
                    try:
                        protocol.connection_lost(why)
                    except Exception as exc:
                        self._report(exc, tr)
        finally:
            self.lost = None

    def _report(self, exc: Exception, obj: Any) -> None:
        self.loop.call_exception_handler({"message": "error in a connection's event handler", "exception": exc,
                                          "transport": obj})
        abort = getattr(obj, "abort", None)
        if abort is not None:
            abort()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.ep.fileno())
        self.ep.close()


class RawTransport(asyncio.Transport):
    """A plain TCP connection on the layer's epoll set (see the module's rules).

    The state lives in slots, every one set by `open_transport`: an attribute read is then a slot read. (Defaults
    kept on the class cost less to create, but Python 3.11 does not specialise reading a class attribute through
    an instance: each such read took the generic lookup, ~200 instructions, several times per connection.)"""

    __slots__ = ("layer", "fd", "peer", "family", "mask", "wbuf", "wsize", "high", "low", "wpaused", "reading",
                 "closing", "closed", "protocol")

    layer: Layer
    fd: int
    peer: Any
    family: int
    mask: int  # the epoll interest registered (0: not in the set)
    wbuf: list[bytes] | None  # bytes queued while the socket was full
    wsize: int
    high: int
    low: int
    wpaused: bool
    reading: bool
    closing: bool
    closed: bool
    protocol: Any

    if TYPE_CHECKING:  # made and started by open_transport() below (no __init__: see there)

        def __init__(self) -> None:
            ...

    # ------------------------------------------------------------------ the epoll interest
    def _interest(self) -> None:
        want = (EPOLLIN if self.reading else 0) + (EPOLLOUT if self.wbuf else 0)  # distinct bits: + is |
        mask = self.mask
        if want == mask:
            return
        ep = self.layer.ep
        if mask == 0:
            ep.register(self.fd, want)
        elif want == 0:
            ep.unregister(self.fd)
        else:
            ep.modify(self.fd, want)
        self.mask = want

    def on_event(self, ev: int) -> None:
        if ev & EPOLLOUT and self.wbuf:
            self._flush()
            if self.closed:
                return
        if self.reading:
            if ev & _IN_ERR_HUP:
                try:
                    data = _read(self.fd, READ_SIZE)
                except _AGAIN:
                    return
                except OSError as exc:
                    self._fatal(exc)
                    return
                if data:
                    self.protocol.data_received(data)
                else:
                    self._eof()

    def _eof(self) -> None:
        self.reading = False
        self._interest()
        if not self.protocol.eof_received():
            self.close()

    def _flush(self) -> None:
        buf = self.wbuf
        assert buf is not None
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        try:
            n = _write(self.fd, data)
        except _AGAIN:
            n = 0
        except OSError as exc:
            self._fatal(exc)
            return
        if n == len(data):
            buf.clear()
            self.wsize = 0
        else:
            buf[:] = [data[n:]]
            self.wsize = len(data) - n
        if self.wpaused and self.wsize <= self.low:
            self.wpaused = False
            self.protocol.resume_writing()
            if self.closed:
                return
        if not buf and self.closing:
            self._teardown(None)
        else:
            self._interest()

    # ------------------------------------------------------------------ asyncio.Transport
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing or not data:
            return
        buf = self.wbuf
        if buf:
            buf.append(bytes(data))
            self.wsize += len(data)
        else:
            # the attempt is written out as in _flush: a shared helper measured +0.6 % instructions per
            # `option httpclose` request (156.1k against 155.2k, bench/instructions.py)
            try:
                n = _write(self.fd, data)
            except _AGAIN:
                n = 0
            except OSError as exc:
                self._fatal(exc)
                return
            if n == len(data):
                return
            rest = bytes(data[n:])
            self.wbuf = [rest]
            self.wsize = len(rest)
            self._interest()
        if not self.wpaused and self.wsize > self.high:
            self.wpaused = True
            self.protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def pause_reading(self) -> None:
        if self.closing or not self.reading:
            return
        self.reading = False
        self._interest()

    def resume_reading(self) -> None:
        if self.closing or self.reading:
            return
        self.reading = True
        self._interest()

    def is_reading(self) -> bool:
        return self.reading and not self.closing

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high == self.high and low == self.low:  # the streams ask for HIGH_WATER/LOW_WATER, the default here
            return
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        self.high = high
        self.low = low

    def get_write_buffer_size(self) -> int:
        return self.wsize

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.low, self.high

    def is_closing(self) -> bool:
        return self.closing

    def get_protocol(self) -> Any:
        return self.protocol

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        if name == "sockname":
            if self.closed:
                return default
            s = socket.socket(self.family, socket.SOCK_STREAM, fileno=os.dup(self.fd))
            try:
                return s.getsockname()
            finally:
                s.close()
        return default

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.reading = False
        if self.wbuf:
            self._interest()  # writable only: the queue goes out, then _flush tears down
            return
        # _teardown(None) written out: the usual end of both connections of an `option httpclose` request (the
        # call costs ~0.7k instructions per such request: profile_load.py --mode seed-httpclose --callgrind)
        self.closed = True
        layer = self.layer
        layer.table.pop(self.fd, None)
        _close(self.fd)
        lost = layer.lost
        if lost is not None:
            lost.append((self, None))
        else:
            layer.loop.call_soon(self._lost, None)

    def abort(self) -> None:
        if not self.closed:
            self._fatal(None)

    def _fatal(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closing = True
        self.reading = False
        if self.wbuf:
            self.wbuf = None
            self.wsize = 0
        self._teardown(exc)

    def _teardown(self, exc: BaseException | None) -> None:
        self.closed = True
        layer = self.layer
        # the descriptor is still open, so its table entry is this transport's (a connect's entry was replaced
        # when the transport started)
        layer.table.pop(self.fd, None)
        _close(self.fd)  # also takes it out of the epoll set
        lost = layer.lost
        if lost is not None:  # inside the layer's drain: reported at its end
            lost.append((self, exc))
        else:
            layer.loop.call_soon(self._lost, exc)

    def _lost(self, exc: BaseException | None) -> None:
        protocol = self.protocol
        if protocol is not None:
            self.protocol = None
            protocol.connection_lost(exc)


def open_transport(layer: Layer, fd: int, peer: Any, family: int, protocol: Any, mask: int = 0) -> RawTransport:
    """A RawTransport for the connected socket `fd`, started: attached to `protocol`, which hears
    `connection_made`, and reading. `mask`: the socket's epoll entry when it has one already (a connect's).

    A plain function rather than the class's constructor and a start method: calling a class runs its __init__
    through the type's generic slot (argument tuple, lookup, a frame of its own, ~120 ns), and each call a frame;
    this runs twice per `option httpclose` request."""
    tr = _new_object(RawTransport)
    tr.layer = layer
    tr.fd = fd
    tr.peer = peer
    tr.family = family
    tr.mask = mask
    tr.wbuf = None
    tr.wsize = 0
    tr.high = HIGH_WATER
    tr.low = LOW_WATER
    tr.wpaused = False
    tr.reading = True
    tr.closing = False
    tr.closed = False
    tr.protocol = protocol
    layer.table[fd] = tr
    protocol.connection_made(tr)
    if tr.closing:
        return tr
    if tr.mask == 0 and tr.wbuf is None and tr.reading:  # the usual start: _interest written out
        layer.ep.register(fd, EPOLLIN)
        tr.mask = EPOLLIN
    else:
        tr._interest()
    return tr


class RawServer:
    """Accepts on a listening socket of ours and serves each connection with a protocol from `factory`."""

    def __init__(self, layer: Layer, sock: socket.socket, factory: Callable[[], Any]) -> None:
        self.layer = layer
        self.sock = sock
        self.fd = sock.fileno()
        self.factory = factory
        self.family = sock.family
        self.serving = False
        self._accept = sock._accept  # type: ignore[attr-defined]  # (fd, address): no socket object per client
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by every accepted socket

    def start(self) -> None:
        if not self.serving:
            self.serving = True
            self.layer.table[self.fd] = self
            self.layer.ep.register(self.fd, EPOLLIN)

    def pause(self) -> None:
        if self.serving:
            self.serving = False
            if self.layer.table.get(self.fd) is self:
                del self.layer.table[self.fd]
            if not self.layer.closed:
                self.layer.ep.unregister(self.fd)

    def on_event(self, ev: int) -> None:
        accept, layer, factory, family = self._accept, self.layer, self.factory, self.family
        for _ in range(ACCEPT_BATCH):
            if not self.serving:  # a connection limit paused the listener from inside connection_made
                return
            try:
                fd, peer = accept()
            except _AGAIN:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    layer.loop.call_exception_handler({"message": "accept failed", "exception": exc})
                    return
                continue  # ECONNABORTED and the like: that client is gone, take the next one
            _ioctl(fd, _FIONBIO, _ON)
            open_transport(layer, fd, peer, family, factory())


def enabled() -> bool:
    """Whether HTTP streams use this layer: where epoll exists, unless BALANCIER_RAWIO=0 asks for the loop's own
    transports (a switch for comparisons, bench/instructions.py --src style A/B runs)."""
    return hasattr(select, "epoll") and os.environ.get("BALANCIER_RAWIO", "1") != "0"


_FAMILY: dict[str, int] = {}


def literal_family(host: str) -> int:
    """AF_INET or AF_INET6 for an address literal, 0 for anything else (remembered per host string)."""
    fam = _FAMILY.get(host)
    if fam is None:
        fam = 0
        for f in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.inet_pton(f, host)
            except OSError:
                continue
            fam = f
            break
        if len(_FAMILY) < 4096:
            _FAMILY[host] = fam
    return fam


class RawConnect:
    """A server connect on the layer, with what the stream uses of serverside.Connect: `start()`, `cancel()`,
    the outcome in `value` ((transport, protocol)) or `error`, and `done(self)` called once when it ends. No
    coroutine, future or Task: the connecting socket's epoll entry is this object.

    `first`: bytes to send as soon as the connection is up (the request). `start()` tries them right after
    `connect`, as HAProxy does: on loopback the handshake is already over by then, and the write succeeds. Then
    `sent` is True, what the socket did not take is queued on the transport, the connection reads at once (one
    epoll registration, no wait for writability), and `done` is called inside `start()`: the server may answer
    before a later loop turn, so its protocol must have its owner by then. Any other outcome known inside
    `start()` (refused at once) is reported on a later loop turn, as Connect does; a connect still in progress
    (the write said EAGAIN) waits for one epoll report of writability and leaves the first bytes to the caller."""

    __slots__ = ("layer", "factory", "arg", "host", "port", "family", "done", "sock", "value", "error", "finished",
                 "first", "sent")

    def __init__(self, layer: Layer, factory: Callable[[Any], Any], arg: Any, host: str, port: int, family: int,
                 done: Callable[[RawConnect], None], first: bytes = b"") -> None:
        self.layer = layer
        self.factory = factory
        self.arg = arg
        self.host = host
        self.port = port
        self.family = family
        self.done = done
        self.sock: Any = None
        self.value: Any = None
        self.error: BaseException | None = None
        self.finished = False
        self.first = first
        self.sent = False

    def start(self) -> None:
        sock = _new_socket(self.family, _STREAM_NONBLOCK)
        sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        err = sock.connect_ex((self.host, self.port))
        if err == _EINPROGRESS:
            first = self.first
            if first:
                try:
                    n = _write(sock.fileno(), first)
                except _AGAIN:  # still connecting
                    n = -1
                except OSError as exc:  # refused, reset: the connect failed
                    n = -1
                    err = exc.errno or errno.EIO
                if n >= 0:
                    self.sent = True
                    self._outcome(sock, 0, False, first[n:] if n < len(first) else b"")
                    self.done(self)
                    return
            if err == _EINPROGRESS:
                self.sock = sock
                fd = sock.fileno()
                layer = self.layer
                layer.table[fd] = self
                layer.ep.register(fd, _OUT_ONESHOT)  # one report; the transport re-arms the entry
                return
        self._outcome(sock, err, False)
        self.layer.loop.call_soon(self.done, self)

    def on_event(self, ev: int) -> None:
        sock, self.sock = self.sock, None
        if sock is None:
            return
        # writable without error or hang-up: connected (SO_ERROR is read only when the report says something)
        err = sock.getsockopt(_SOL_SOCKET, _SO_ERROR) if ev & _ERR_HUP else 0
        self._outcome(sock, err, True)
        self.done(self)

    def _outcome(self, sock: Any, err: int, registered: bool, rest: bytes = b"") -> None:
        self.finished = True
        if err:
            if registered:
                del self.layer.table[sock.fileno()]
            sock.close()  # also takes it out of the epoll set
            self.error = OSError(err, f"Connect call failed {(self.host, self.port)}: {os.strerror(err)}")
            return
        # registered: the (disarmed) EPOLLONESHOT entry of the wait stays, open_transport modifies it
        proto = self.factory(self.arg)
        tr = open_transport(self.layer, sock.detach(), (self.host, self.port), self.family, proto,
                            _OUT_ONESHOT if registered else 0)  # replaces this object in the table
        if rest:  # the part of the first bytes the socket did not take at once
            tr.write(rest)
        self.value = (tr, proto)

    def cancel(self) -> None:
        if self.finished:
            return
        self.finished = True
        sock, self.sock = self.sock, None
        if sock is not None:
            self.layer.table.pop(sock.fileno(), None)
            sock.close()
        self.error = asyncio.CancelledError()
        self.layer.loop.call_soon(self.done, self)

    def cancelled(self) -> bool:
        return isinstance(self.error, asyncio.CancelledError)
