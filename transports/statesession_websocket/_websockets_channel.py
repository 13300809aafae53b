"""The ``websockets`` transport's channel: websockets' sans-I/O protocol, driven by trio
streams in the tasks that call it.

Theory of operation
-------------------
websockets' ``ServerProtocol`` and ``ClientProtocol`` parse and build WebSocket frames
without doing any I/O. A :class:`WebsocketsChannel` moves their bytes itself, in the task
that calls it, and runs no task of its own: ``receive`` reads the socket and feeds the
parser until a whole message is out; ``send`` frames one message and writes it. Where
trio-websocket hands every message from its reader task to the caller through a memory
channel, here a received frame reaches the caller without a task switch, and an idle
connection holds no task, nursery or channel.

*Text.* Frames are JSON text, so each message is decoded from UTF-8 here, once, and
handed up as ``str``. A text message that is not UTF-8 fails the connection with close
code 1007 (Invalid Frame Payload Data), a binary message with 1003 (Unsupported Data):
the protocol queues the close frame (and, on a server, the end of the stream), the
messages before it are still handed up, and then ``receive`` raises
``ChannelBrokenError`` saying why.

*Writes.* Whichever task writes, writes everything the protocol has queued. What the
protocol answers on its own while receiving (a pong, the reply to a close frame) is
written by the receiving task when no write is under way, and otherwise goes out with
the write under way. A receiving task's write is shielded from cancellation and bounded
by ``close_timeout``, so a cancelled ``receive`` still loses nothing. :meth:`send_many`
frames several messages and writes them at once, one system call for a whole replay.

*Closing.* ``aclose`` sends the close frame, then reads (and drops) what the peer still
sends until its close frame comes back (or it closes the connection), for at most
``close_timeout`` or :data:`LINGER` seconds, and never past its caller's deadline (which
may already have passed): closing a socket that has unread input would reset the
connection and throw away the last frames sent. It then closes the socket, whatever the
handshake came to.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import suppress

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import PayloadTooBig, ProtocolError
from websockets.frames import BINARY, CONT, TEXT, Frame
from websockets.protocol import SEND_EOF, State
from websockets.server import ServerProtocol

from statesession import (
    Channel,
    ChannelBrokenError,
    ChannelClosedError,
    ChannelError,
    FrameTooLargeError,
)
from statesession.sockets import Stream, peer_address, peer_name, reset

from ._common import (
    CLOSE_CODES,
    INVALID_DATA,
    MESSAGE_TOO_BIG,
    NOT_TEXT,
    PROTOCOL_ERROR,
    RECEIVE_SIZE,
    UNSUPPORTED_DATA,
)

__all__ = ["LINGER", "WebsocketsChannel", "feed", "send_chunks"]

log = logging.getLogger("statesession.websockets")

#: Seconds a closing channel waits for its peer to close too (see ``aclose``).
LINGER = 2.0

_OPEN = State.OPEN
_Protocol = ServerProtocol | ClientProtocol


class WebsocketsChannel(Channel):
    """A Channel over one WebSocket connection (text messages), driven in its callers'
    tasks."""

    __slots__ = (
        "_address",
        "_close_timeout",
        "_closed",
        "_done",
        "_ended",
        "_fragments",
        "_max_frame",
        "_messages",
        "_next",
        "_peer",
        "_refused",
        "_write_failed",
        "_writing",
        "_written",
        "protocol",
        "stream",
    )

    def __init__(
        self,
        stream: Stream,
        protocol: _Protocol,
        *,
        max_frame: int,
        close_timeout: float = 10.0,
        events: Iterable[object] = (),
    ) -> None:
        self.stream = stream
        self.protocol = protocol
        self._max_frame = max_frame
        self._close_timeout = close_timeout
        self._peer = peer_name(stream, "ws")
        self._address = peer_address(stream)
        self._closed = False
        #: The socket reached its end (EOF or an error): nothing more will be read.
        self._ended = False
        #: Whole messages parsed and decoded, not yet returned by ``receive``.
        #: (A list read from ``_next`` on: an empty deque costs 600 bytes, a list 56.)
        self._messages: list[str] = []
        self._next = 0
        #: The parts of a fragmented text message being received.
        self._fragments = bytearray()
        #: Why this side failed the connection (what the peer sent was not text).
        self._refused: str | None = None
        self._writing = False
        self._written: trio.lowlevel.ParkingLot | None = None
        #: Why writing failed (a write cut short leaves a frame half sent).
        self._write_failed: BaseException | None = None
        #: Set once the socket is closed (for a task that owns the channel).
        self._done: trio.Event | None = None
        self._take(events)

    @property
    def peer(self) -> str:
        return self._peer

    @property
    def peer_address(self) -> str | None:
        return self._address

    # -- errors -----------------------------------------------------------------------------

    def _closed_error(self) -> ChannelClosedError:
        return ChannelClosedError(f"{self._peer} was closed by this side")

    def _broken(self) -> ChannelBrokenError | ChannelClosedError:
        """Why the connection can carry no more (the peer closed it, it broke, or this side
        failed it)."""
        if self._closed:
            return self._closed_error()
        if self._refused is not None:
            return ChannelBrokenError(f"{self._peer} {self._refused}")
        protocol = self.protocol
        close = protocol.close_rcvd
        if close is not None:
            detail = f": {close.reason}" if close.reason else ""
            return ChannelBrokenError(
                f"{self._peer}: the connection was closed ({close.code}{detail})"
            )
        failure = protocol.parser_exc or self._write_failed
        if failure is not None:
            return ChannelBrokenError(f"{self._peer}: the connection broke ({failure})")
        return ChannelBrokenError(f"{self._peer}: the connection broke")

    # -- receiving --------------------------------------------------------------------------

    def _take(self, events: Iterable[object]) -> None:
        """Keep the messages among ``events``, decoded (control frames were handled by the
        protocol); fail the connection at the first that is not UTF-8 text."""
        messages = self._messages
        for event in events:
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is TEXT:
                if not event.fin:
                    # A fragmented message is gathered in one buffer: what it holds is
                    # its bytes, however many fragments they came in (the protocol
                    # bounds the bytes by max_frame).
                    self._fragments = bytearray(event.data)
                    continue
                data: bytes | bytearray = bytes(event.data)
            elif opcode is CONT:
                self._fragments += event.data
                if not event.fin:
                    continue
                data, self._fragments = self._fragments, bytearray()
            elif opcode is BINARY:
                self._refuse(UNSUPPORTED_DATA, "sent a binary message")
                return
            else:
                continue
            try:
                messages.append(data.decode())
            except UnicodeDecodeError as exc:
                self._refuse(
                    INVALID_DATA, f"sent text that is not UTF-8 ({exc.reason} at byte {exc.start})"
                )
                return

    def _refuse(self, code: int, why: str, reason: str = NOT_TEXT) -> None:
        """Fail the connection (RFC 6455, section 7.1.7): the protocol queues a close
        frame with ``code`` and ``reason`` (a server's, the end of the stream too) and
        reads no more."""
        log.info(
            "%s %s: failing the connection with close code %d (%s)", self._peer, why, code, reason
        )
        self._refused = f"{why}; this side failed the connection with close code {code}"
        if self.protocol.state is _OPEN:
            self.protocol.fail(code, reason)

    async def receive(self) -> str:
        if self._closed:
            raise self._closed_error()
        messages = self._messages
        protocol = self.protocol
        while self._next == len(messages):
            if self._refused is not None:
                if protocol.writes:  # (refused among the events the handshake brought)
                    await self._answer()
                raise self._broken()
            close = protocol.close_rcvd
            if close is not None and close.code == MESSAGE_TOO_BIG:
                # A frame over a limit -- ours or the peer's -- ended the connection.
                raise FrameTooLargeError(None, self._max_frame)
            if self._ended or close is not None:
                raise self._broken()
            failure = protocol.parser_exc
            if failure is not None:
                if isinstance(failure, PayloadTooBig):
                    raise FrameTooLargeError(None, self._max_frame)
                if isinstance(failure, ProtocolError):  # (the protocol sent the close frame)
                    self._refuse(PROTOCOL_ERROR, "broke the WebSocket protocol", str(failure))
                raise self._broken()
            try:
                data = await self.stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._ended = True
                raise self._broken() from exc
            feed(protocol, data)
            if not data:
                self._ended = True
            self._take(protocol.events_received())
            if protocol.writes:
                await self._answer()
        index = self._next
        message = messages[index]
        if index + 1 == len(messages):
            messages.clear()
            self._next = 0
        else:
            messages[index] = ""  # let it go
            self._next = index + 1
        return message

    async def _answer(self) -> None:
        """Write what the protocol answered while receiving, unless a write under way
        will take it. Shielded and bounded: a receive's cancellation must lose nothing.

        When the answer is the reply to the peer's close frame and another task is
        writing, wait for that write to end (it sends the reply): once ``receive``
        reports the close, the writer may be cancelled, and the reply with it."""
        if self._write_failed is not None:
            return
        if self._writing and self.protocol.close_rcvd is None:
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self._close_timeout
            with suppress(ChannelError):  # the next receive or send reports it
                await self._write()
        if scope.cancelled_caught:
            self._write_failed = trio.TooSlowError(
                f"the peer took no data for {self._close_timeout:g} s"
            )

    # -- sending ----------------------------------------------------------------------------

    def _writable(self) -> _Protocol:
        """The protocol to frame messages with; raises if nothing more can be sent."""
        if self._closed:
            raise self._closed_error()
        protocol = self.protocol
        if protocol.state is not _OPEN or self._write_failed is not None:
            raise self._broken()
        return protocol

    async def send(self, frame: str) -> None:
        self._writable().send_text(frame.encode())
        await self._write()

    async def send_many(self, frames: Iterable[str]) -> None:
        """Send several frames with one write (as a replay does)."""
        send_text = self._writable().send_text
        for frame in frames:
            send_text(frame.encode())
        await self._write()

    async def _write(self) -> None:
        """Write everything the protocol has queued; raise ChannelBrokenError if the
        connection cannot take it. If another task is writing, wait for it: it writes
        what was queued here too."""
        if self._writing:
            if self._written is None:
                self._written = trio.lowlevel.ParkingLot()
            await self._written.park()
            if self._write_failed is not None:
                raise self._broken()
            return
        self._writing = True
        protocol = self.protocol
        stream = self.stream
        try:
            while chunks := protocol.data_to_send():
                await send_chunks(stream, chunks)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._write_failed = exc
            raise self._broken() from exc
        except BaseException as exc:  # cancelled mid-write: a frame may be half sent
            self._write_failed = exc
            raise
        finally:
            self._writing = False
            if self._written is not None:
                self._written.unpark_all()

    # -- closing ----------------------------------------------------------------------------

    async def aclose(self, error: str | None = None) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        protocol = self.protocol
        try:
            # Within the caller's deadline too: one already passed cancels the first write,
            # and the socket is closed below all the same.
            with trio.move_on_after(min(self._close_timeout, LINGER)):
                if protocol.state is _OPEN:
                    protocol.send_close(CLOSE_CODES.get(error, 4000), error or "")
                if self._write_failed is not None:
                    return  # a frame was cut short: no close handshake can follow it
                await self._write()
                # Read until the peer has answered with its close frame (it sends nothing
                # after it), or closed the connection.
                while not self._ended and (
                    protocol.close_rcvd is None or protocol.close_sent is None
                ):
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                    feed(protocol, data)
                    if not data:
                        break
                    protocol.events_received()
                    if protocol.writes and self._write_failed is None:
                        await self._write()
        except (
            ChannelError,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.BusyResourceError,
        ):
            pass
        finally:
            self._ended = True
            # (First: out of time, the close below raises Cancelled once it has closed.)
            if self._done is not None:
                self._done.set()
            await trio.aclose_forcefully(self.stream)

    async def abort(self) -> None:
        """Reset the TCP connection (RST) without a close handshake, as a crashed peer or a
        failed network would."""
        self._closed = self._ended = True
        if self._done is not None:
            self._done.set()
        await reset(self.stream)

    async def _close_with(self, task_status: trio.TaskStatus[None]) -> None:
        """Run until the channel is closed; close its socket if cancelled first (a client
        connection lives no longer than the nursery it was opened in)."""
        self._done = trio.Event()
        task_status.started()
        try:
            await self._done.wait()
        finally:
            if not self._done.is_set():
                self._closed = self._ended = True
                await trio.aclose_forcefully(self.stream)


def feed(protocol: _Protocol, data: bytes | bytearray) -> None:
    """Give ``protocol`` what a read returned (nothing: the end of the input)."""
    if data:
        protocol.receive_data(data)
    else:
        protocol.receive_eof()


async def send_chunks(stream: Stream, chunks: list[bytes]) -> None:
    """Write what a protocol queued (``data_to_send()``) in one write, then end this
    side of the stream if it asked to (``SEND_EOF`` comes last; TLS streams cannot)."""
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if data:
        await stream.send_all(data)
    if chunks[-1] == SEND_EOF and isinstance(stream, trio.SocketStream):
        await stream.send_eof()
