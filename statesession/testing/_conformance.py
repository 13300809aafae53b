"""The transport conformance suite: what every Channel implementation must do.

Each check takes ``open_pair``, a function returning an async context manager that yields
two connected channels ``(a, b)`` -- for a network transport, the server's and the
client's ends of one real connection -- and the ``max_frame`` both ends enforce on what
they receive. A check raises ``AssertionError`` saying what went wrong. Run them all with
:func:`check_channel_pair`, or one by one from :data:`CONFORMANCE_CHECKS` (for example to
parametrize a test). The rules of a Transport itself are checked by
:func:`~statesession.testing.check_transport` (``_transport_check``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress

import trio

from .._core.channel import Channel
from .._core.exceptions import (
    ChannelBrokenError,
    ChannelClosedError,
    ChannelError,
    FrameTooLargeError,
)
from .._core.util import collapse_single_exception_group

__all__ = ["CONFORMANCE_CHECKS", "OpenPair", "check_channel_pair"]

OpenPair = Callable[[], AbstractAsyncContextManager[tuple[Channel, Channel]]]
Check = Callable[[OpenPair, int], Awaitable[None]]

#: Seconds any single step may take before the check fails.
STEP = 10.0
#: Seconds ``aclose`` may take when the peer has stopped reading.
CLOSE_BOUND = 15.0
#: Seconds ``aclose`` may overrun its caller's deadline (closing a socket, on a busy machine).
CLOSE_MARGIN = 1.0


def _check(check: Check) -> Check:
    """Let a failed check raise its AssertionError itself, not inside exception groups
    from the nurseries it opened."""

    @functools.wraps(check)
    async def run(open_pair: OpenPair, max_frame: int) -> None:
        with collapse_single_exception_group():
            await check(open_pair, max_frame)

    return run


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _text(frame: str | bytes) -> str:
    return frame.decode("utf-8") if isinstance(frame, bytes) else frame


async def _receive(channel: Channel) -> str:
    with trio.move_on_after(STEP):
        return _text(await channel.receive())
    raise AssertionError(f"no frame arrived within {STEP:g} s")


async def _raises(
    expected: type[BaseException] | tuple[type[BaseException], ...],
    operation: Callable[[], Awaitable[object]],
    what: str,
) -> BaseException:
    names = " or ".join(
        e.__name__ for e in (expected if isinstance(expected, tuple) else (expected,))
    )
    with trio.move_on_after(STEP):
        try:
            await operation()
        except expected as exc:
            return exc
        except Exception as exc:
            raise AssertionError(
                f"{what} raised {type(exc).__name__}: {exc}; expected {names}"
            ) from exc
        raise AssertionError(f"{what} returned; expected {names}")
    raise AssertionError(f"{what} did not raise {names} within {STEP:g} s")


async def _receive_until_broken(channel: Channel) -> None:
    for _ in range(1000):
        await channel.receive()


async def _send_until_broken(channel: Channel) -> None:
    for _ in range(1000):
        await channel.send("{}")
        await trio.sleep(0.01)


@_check
async def check_ordering(open_pair: OpenPair, max_frame: int) -> None:
    """Frames arrive whole and in order, both ways."""
    async with open_pair() as (a, b):
        for sender, receiver in ((a, b), (b, a)):
            frames = [f'{{"n":{i},"pad":"{"x" * (i % 50)}"}}' for i in range(300)]
            async with trio.open_nursery() as nursery:

                async def send_all(channel: Channel = sender, batch: list[str] = frames) -> None:
                    for frame in batch:
                        await channel.send(frame)

                nursery.start_soon(send_all)
                got = [await _receive(receiver) for _ in frames]
            _expect(got == frames, "frames arrived out of order, split or merged")


@_check
async def check_large_frames(open_pair: OpenPair, max_frame: int) -> None:
    """A frame of exactly ``max_frame`` bytes (multi-byte text included) passes intact."""
    wide = min(max_frame // 4, 1000)
    frame = "é" * wide + "x" * (max_frame - 2 * wide)
    _expect(len(frame.encode()) == max_frame, "internal: frame is not max_frame bytes")
    async with open_pair() as (a, b):
        for sender, receiver in ((a, b), (b, a)):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender.send, frame)
                got = await _receive(receiver)
            _expect(got == frame, f"a {max_frame}-byte frame did not arrive intact")


@_check
async def check_frame_too_large(open_pair: OpenPair, max_frame: int) -> None:
    """A frame over ``max_frame`` makes the receiving side raise FrameTooLargeError."""
    async with open_pair() as (a, b), trio.open_nursery() as nursery:

        async def send_oversized() -> None:
            # a transport may also refuse it, or see the peer give up
            with suppress(ChannelError):
                await a.send("x" * (max_frame + 1))

        nursery.start_soon(send_oversized)
        await _raises(FrameTooLargeError, b.receive, "receiving an oversized frame")
        nursery.cancel_scope.cancel()  # the rest of the frame may never be read


async def _check_close(first: Channel, second: Channel) -> None:
    await first.send('{"last":"words"}')
    await first.aclose()
    await first.aclose()  # idempotent
    await _raises(ChannelClosedError, lambda: first.send("{}"), "send after aclose")
    await _raises(ChannelClosedError, first.receive, "receive after aclose")
    _expect(await _receive(second) == '{"last":"words"}', "a frame sent before aclose was lost")
    await _raises(ChannelBrokenError, second.receive, "receive after the peer closed")
    await _raises(
        ChannelBrokenError, lambda: _send_until_broken(second), "sending after the peer closed"
    )
    with trio.move_on_after(CLOSE_BOUND) as closing:
        try:
            await second.aclose()
        except Exception as exc:
            raise AssertionError(
                f"aclose of a channel its peer had closed raised {type(exc).__name__}: {exc}"
            ) from exc
    _expect(not closing.cancelled_caught, "aclose of a broken channel did not return")


@_check
async def check_close_by_first_side(open_pair: OpenPair, max_frame: int) -> None:
    """The side that closes gets ChannelClosedError ("you closed it"); its peer gets the
    frames sent before, then ChannelBrokenError ("the peer ended it")."""
    async with open_pair() as (a, b):
        await _check_close(a, b)


@_check
async def check_close_by_second_side(open_pair: OpenPair, max_frame: int) -> None:
    """The same, when the other end closes."""
    async with open_pair() as (a, b):
        await _check_close(b, a)


@_check
async def check_cancel_blocked_receive(open_pair: OpenPair, max_frame: int) -> None:
    """Cancelling a receive that is waiting loses nothing: the channel still works."""
    async with open_pair() as (a, b):
        for sender, receiver in ((a, b), (b, a)):
            with trio.move_on_after(0.2) as waited:
                await receiver.receive()
            _expect(waited.cancelled_caught, "receive returned with nothing sent")
            await sender.send('{"after":"cancel"}')
            _expect(
                await _receive(receiver) == '{"after":"cancel"}',
                "the frame after a cancelled receive was lost",
            )


@_check
async def check_cancel_receive_mid_frame(open_pair: OpenPair, max_frame: int) -> None:
    """Cancelling a receive while a frame is arriving loses nothing either: a transport
    must keep the part it has read (the core cancels receives at any moment)."""
    size = max(1, max_frame)
    count = max(8, (8 * 1024 * 1024) // size)  # enough bytes that receives get split
    frames = [f"{i:08d}" + chr(ord("a") + i % 26) * (size - 8) for i in range(count)]
    async with open_pair() as (a, b), trio.open_nursery() as nursery:

        async def send_all() -> None:
            for frame in frames:
                await a.send(frame)

        nursery.start_soon(send_all)
        got: list[str] = []
        delay = 0.00005
        with trio.move_on_after(STEP * 3) as waited:
            while len(got) < len(frames):
                with trio.move_on_after(delay):
                    try:
                        got.append(_text(await b.receive()))
                    except ChannelError as exc:
                        raise AssertionError(
                            f"after receives were cancelled mid-frame, receive raised "
                            f"{type(exc).__name__}: {exc}"
                        ) from exc
                delay = 0.00005 if delay > 0.0005 else delay * 1.5
        _expect(not waited.cancelled_caught, f"only {len(got)} of {count} large frames arrived")
        _expect(got == frames, "a receive cancelled mid-frame lost or garbled data")


@_check
async def check_concurrent_send_and_receive(open_pair: OpenPair, max_frame: int) -> None:
    """Both ends send and receive at the same time, each direction in order."""
    count = 500
    async with open_pair() as (a, b):
        received: dict[str, list[str]] = {"a": [], "b": []}

        async def pump(name: str, channel: Channel) -> None:
            async def send() -> None:
                for i in range(count):
                    await channel.send(f'{{"from":"{name}","n":{i}}}')

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                for _ in range(count):
                    received[name].append(await _receive(channel))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump, "a", a)
            nursery.start_soon(pump, "b", b)
        _expect(
            received["a"] == [f'{{"from":"b","n":{i}}}' for i in range(count)],
            "frames b sent arrived out of order or incomplete",
        )
        _expect(
            received["b"] == [f'{{"from":"a","n":{i}}}' for i in range(count)],
            "frames a sent arrived out of order or incomplete",
        )


@_check
async def check_peer_stops_reading(open_pair: OpenPair, max_frame: int) -> None:
    """A peer that stops reading makes send wait (buffering is bounded), the waiting send
    can be cancelled, and aclose still returns in bounded time."""
    size = min(max_frame, 64 * 1024)
    frame = "x" * size
    budget = (64 * 1024 * 1024) // size  # more than any sane buffer holds
    async with open_pair() as (a, b):
        sent = 0
        with trio.move_on_after(1.5) as waited:
            for _ in range(budget):
                await a.send(frame)
                sent += 1
        _expect(
            waited.cancelled_caught,
            f"sent {sent * size} bytes to a peer that reads nothing without ever waiting",
        )
        with trio.move_on_after(CLOSE_BOUND) as closing:
            await a.aclose()
        _expect(
            not closing.cancelled_caught,
            f"aclose took over {CLOSE_BOUND:g} s with a peer that stopped reading",
        )
        del b


async def _close_against_deadline(open_pair: OpenPair, allowed: float) -> None:
    """Close each side in turn, its peer idle, with ``allowed`` seconds left (none: a
    deadline already passed)."""
    for side in (0, 1):
        async with open_pair() as pair:
            closing, peer = pair[side], pair[1 - side]
            who = ("the first", "the second")[side]
            start = trio.current_time()
            with trio.CancelScope(deadline=start + allowed if allowed else -math.inf):
                try:
                    await closing.aclose()
                except Exception as exc:
                    raise AssertionError(
                        f"aclose of {who} side with {allowed:g} s left raised "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
            took = trio.current_time() - start
            _expect(
                took < allowed + CLOSE_MARGIN,
                f"aclose of {who} side with {allowed:g} s left took {took:.2f} s",
            )
            await _raises(ChannelClosedError, closing.receive, "receive after aclose")
            what = f"after its peer's aclose with {allowed:g} s left"
            receive = functools.partial(_receive_until_broken, peer)
            await _raises(ChannelBrokenError, receive, f"receive {what}")
            send = functools.partial(_send_until_broken, peer)
            await _raises(ChannelBrokenError, send, f"send {what}")


@_check
async def check_aclose_out_of_time(open_pair: OpenPair, max_frame: int) -> None:
    """``aclose`` under a cancel scope whose deadline has already passed (the core giving
    up on a connection) closes the connection at once, on either side: the peer sees it
    closed, on receive and on send (the socket is gone, not only half closed)."""
    await _close_against_deadline(open_pair, 0.0)


@_check
async def check_aclose_keeps_deadline(open_pair: OpenPair, max_frame: int) -> None:
    """``aclose`` with a little time left, its peer idle (not answering a close handshake),
    returns by the caller's deadline, and the peer then sees the connection closed."""
    await _close_against_deadline(open_pair, 0.5)


async def _expect_closed_by_abort(aborted: Channel, who: str) -> None:
    await _raises(ChannelClosedError, aborted.receive, f"receive on {who} side after its abort")
    await _raises(
        ChannelClosedError, lambda: aborted.send("{}"), f"send on {who} side after its abort"
    )


@_check
async def check_peer_reset(open_pair: OpenPair, max_frame: int) -> None:
    """``abort()`` (close at once, as a crash would) on either side returns at once and
    is idempotent; that side is then closed (ChannelClosedError), and its peer sees the
    connection broken (ChannelBrokenError on receive and send, never a backend error)
    while its own aclose stays quiet."""
    for side in (0, 1):
        async with open_pair() as pair:
            aborting, peer = pair[side], pair[1 - side]
            who = ("the first", "the second")[side]
            await peer.send('{"before":"reset"}')
            with trio.move_on_after(CLOSE_MARGIN) as waited:
                try:
                    await aborting.abort()
                    await aborting.abort()  # idempotent
                except Exception as exc:
                    raise AssertionError(
                        f"abort of {who} side raised {type(exc).__name__}: {exc}"
                    ) from exc
            _expect(
                not waited.cancelled_caught,
                f"abort of {who} side did not return within {CLOSE_MARGIN:g} s",
            )
            await _expect_closed_by_abort(aborting, who)
            receive = functools.partial(_receive_until_broken, peer)
            await _raises(
                ChannelBrokenError, receive, f"the peer's receive after {who} side's abort"
            )
            send = functools.partial(_send_until_broken, peer)
            await _raises(
                (ChannelBrokenError, ChannelClosedError),
                send,
                f"the peer's send after {who} side's abort",
            )
            try:
                with trio.fail_after(CLOSE_BOUND):
                    await peer.aclose()
            except Exception as exc:
                raise AssertionError(
                    f"aclose after its peer's abort raised {type(exc).__name__}: {exc}"
                ) from exc


CONFORMANCE_CHECKS: dict[str, Check] = {
    "ordering": check_ordering,
    "large_frames": check_large_frames,
    "frame_too_large": check_frame_too_large,
    "close_by_first_side": check_close_by_first_side,
    "close_by_second_side": check_close_by_second_side,
    "cancel_blocked_receive": check_cancel_blocked_receive,
    "cancel_receive_mid_frame": check_cancel_receive_mid_frame,
    "concurrent_send_and_receive": check_concurrent_send_and_receive,
    "peer_stops_reading": check_peer_stops_reading,
    "peer_reset": check_peer_reset,
    "aclose_out_of_time": check_aclose_out_of_time,
    "aclose_keeps_deadline": check_aclose_keeps_deadline,
}


async def check_channel_pair(open_pair: OpenPair, *, max_frame: int) -> None:
    """Run every conformance check; raise AssertionError naming the first that fails."""
    for name, check in CONFORMANCE_CHECKS.items():
        try:
            await check(open_pair, max_frame)
        except AssertionError as exc:
            raise AssertionError(f"conformance check {name!r} failed: {exc}") from exc
