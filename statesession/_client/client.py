"""A trio client for wire protocol v1 that survives dropped connections.

Theory of operation
-------------------
:func:`open_client` opens a channel (through the ``connect`` callable), says ``hello``,
and waits for ``welcome`` before handing the client over, so a refusal raises at once.
A supervisor task (``supervisor.py``) then keeps the session connected: whenever the
channel breaks (or the server stays silent for three heartbeats) it opens a new one, with
exponential backoff and jitter (``backoff.py``), and resumes with the session's token and
the highest seq it has received. Every protocol decision is made by the sans-IO
``ClientProtocol`` (``state.py``); :class:`Client` is the application's face on both.

Server messages are handed out exactly once, in order: a resend of something already
received is dropped. They are acknowledged as the application takes them (``receive``),
so an application that falls behind slows the server down instead of piling up memory.
The client's own messages stay in a pending buffer until the server acknowledges them, and
are resent after a reconnect from what the server's ``welcome`` says it has not received.

Once welcomed, every reconnect *resumes* (``hello.resume``): if the server no longer
remembers this client it refuses with ``resume_gap``, raised to the application, rather
than admit it as new and take its unacknowledged messages twice. A refusal the server
may lift later (:data:`~statesession.protocol.RETRYABLE_CODES`: the server is stopping,
or cannot attach the session right now) is retried like a dropped connection; any other
is final. A session passivated while idle lets the client go dormant -- it reconnects
when it has something to send -- but never while the server has not acknowledged one of
its messages: those are sent again at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio

from .._core.codec import encode_message_data
from .._core.config import MiB
from .._core.exceptions import SessionClosedError
from .._core.util import collapse_single_exception_group
from .._runtime.transport import Transport, pick_transport
from .backoff import Backoff
from .state import ClientProtocol, message_cost
from .supervisor import CLOSE_TIMEOUT, Connect, Supervisor

__all__ = ["Client", "ClientStatistics", "open_client"]


@attrs.frozen(kw_only=True)
class ClientStatistics:
    """Counters of one client, from :meth:`Client.statistics`."""

    connected: bool
    #: The server passivated the idle session; the client reconnects on the next send.
    dormant: bool
    connects: int
    pending: int
    received: int
    sent: int


class Client:
    """A session seen from the client side; made by :func:`open_client`."""

    def __init__(self, state: ClientProtocol, link: Supervisor) -> None:
        self._state = state
        self._link = link

    @property
    def session_id(self) -> str | None:
        """The session id (set by the first ``welcome``)."""
        return self._state.session_id

    @session_id.setter
    def session_id(self, value: str | None) -> None:
        self._state.session_id = value

    @property
    def token(self) -> str | None:
        """The session's secret token, needed to resume it."""
        return self._state.token

    @token.setter
    def token(self, value: str | None) -> None:
        self._state.token = value

    @property
    def client_id(self) -> str | None:
        """This client's id within the session."""
        return self._state.client_id

    @client_id.setter
    def client_id(self, value: str | None) -> None:
        self._state.client_id = value

    @property
    def state(self) -> str | None:
        """The session's lifecycle state as last reported by the server."""
        return self._state.state

    @state.setter
    def state(self, value: str | None) -> None:
        self._state.state = value

    # -- the application's API ------------------------------------------------------------

    async def send(self, data: Any) -> None:
        """Send ``data`` (any JSON value) to the session, exactly once.

        Waits while ``max_pending`` messages are still unacknowledged, or as many as the
        session's inbox holds (``welcome.inbox_messages``, ``inbox_bytes``): a message is
        acknowledged when the server's application takes it, so this client never sends
        more than the server takes without stopping to read it. Raises
        :class:`SessionClosedError` or :class:`RemoteError` once the session is over.
        """
        state, link = self._state, self._link
        await trio.lowlevel.checkpoint_if_cancelled()
        state.check()
        body = encode_message_data(data)
        size = message_cost(body)
        while state.window_full(size):
            if state.ask_for_ack():
                link.wake_writer()
            await link.room.park()
            state.check()
        state.queue_message(body)
        link.wake_writer()
        link.wake.set()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive(self) -> Any:
        """Wait for the next message from the session and return its data.

        Raises :class:`SessionClosedError` once the server closed the session and every
        message has been handed out, or :class:`RemoteError` if the server refused it.
        """
        state, link = self._state, self._link
        await trio.lowlevel.checkpoint_if_cancelled()
        while not state.inbox:
            state.check()
            await link.inbox.park()
        data, wake = state.take(trio.current_time())
        if wake:
            link.wake_writer()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Any:
        """``async for data in client`` ends when the server has closed the session."""
        try:
            return await self.receive()
        except SessionClosedError:
            raise StopAsyncIteration from None

    async def close(self, reason: str | None = None) -> None:
        """End the session (``bye``) and wait until the server confirms (``closed``)."""
        link = self._link
        await trio.lowlevel.checkpoint()
        if link.ended.is_set():
            return
        self._state.say_bye(reason)
        link.wake_writer()
        link.wake.set()
        await link.ended.wait()

    @property
    def closed_reason(self) -> str | None:
        """Why the server closed the session, once it has."""
        return self._state.closed_reason

    def statistics(self) -> ClientStatistics:
        state = self._state
        return ClientStatistics(
            connected=state.connected,
            dormant=state.dormant,
            connects=state.connects,
            pending=len(state.pending),
            received=state.received,
            sent=state.next_seq - 1,
        )


@asynccontextmanager
async def open_client(
    connect: Connect | str,
    *,
    transport: str | Transport | None = None,
    session: str | None = None,
    token: str | None = None,
    client: str | None = None,
    auth: Any = None,
    max_frame: int = MiB,
    max_pending: int = 1000,
    backoff: Backoff | None = None,
    give_up_after: float | None = None,
    connect_timeout: float = 10.0,
    ack_delay: float = 0.05,
    ack_every: int = 32,
) -> AsyncIterator[Client]:
    """Connect to a session server and keep the session connected.

    ``connect`` is a URL (``"ws://127.0.0.1:8765/"``, ``"tcp://127.0.0.1:8766"``, or any
    registered transport's scheme, reached with the transport registered for it or the one
    ``transport`` names or is) or a function that opens a new :class:`Channel`; it is
    used again after every drop, with exponential backoff and jitter between attempts
    (``backoff``) and each attempt bounded by ``connect_timeout``. Pass ``session`` and
    ``token`` to attach to an existing session (with ``client`` to resume as that
    client); otherwise a new session is created. Returns once the server welcomed the
    client, raising :class:`RemoteError` if it refused. Reconnecting gives up after
    ``give_up_after`` seconds without a connection (default: the server's reconnect
    window), raising :class:`ChannelBrokenError`. Leaving the block ends the session with
    ``bye`` unless it is already over. Messages received are acknowledged as the
    application takes them, cumulatively: at the latest ``ack_delay`` seconds later, or
    at once when ``ack_every`` wait for their ack (``ack_delay=0``: each at once).
    """
    if (session is None) != (token is None):
        raise ValueError("session and token go together: give both to resume, or neither")
    if not ack_delay >= 0:
        raise ValueError(f"ack_delay must be 0 or more seconds, not {ack_delay!r}")
    if ack_every < 1:
        raise ValueError(f"ack_every must be at least 1, not {ack_every!r}")
    if isinstance(connect, str):
        picked = pick_transport(connect, transport, role="connect")
    elif transport is not None:
        raise ValueError("transport goes with a URL, not with a function that connects")
    with collapse_single_exception_group():
        async with trio.open_nursery() as nursery:
            opener: Connect = (
                partial(picked.connect, connect, nursery=nursery, max_frame=max_frame)
                if isinstance(connect, str)
                else connect
            )
            state = ClientProtocol(
                session=session,
                token=token,
                client=client,
                auth=auth,
                max_frame=max_frame,
                max_pending=max_pending,
                ack_delay=ack_delay,
                ack_every=ack_every,
            )
            link = Supervisor(
                state,
                opener,
                connect_timeout=connect_timeout,
                backoff=backoff or Backoff(),
                give_up_after=give_up_after,
            )
            client_obj = Client(state, link)
            nursery.start_soon(link.run, name="statesession client")
            await link.welcomed.wait()
            link.check()
            try:
                yield client_obj
            finally:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CLOSE_TIMEOUT
                    if not link.ended.is_set() and state.connected:
                        await client_obj.close()
                    if link.ended.is_set():
                        # Let the supervisor close its channel (a close handshake needs
                        # the transport's tasks, which the cancel below would end).
                        await link.stopped.wait()
                nursery.cancel_scope.cancel()
