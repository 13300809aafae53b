"""The client's protocol state, sans-IO: hello, windows, acks, welcomes and resends."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap
from collections import deque
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from statesession import (
    MessageTooLargeError,
    RemoteError,
    ResumeGapError,
    SessionClosedError,
)
from statesession._client.state import ClientProtocol, Effect, message_cost
from statesession._core.codec import encode_message_data
from statesession.protocol import (
    AckFrame,
    ByeFrame,
    ClosedFrame,
    ErrorFrame,
    HelloFrame,
    MsgFrame,
    PingFrame,
    PongFrame,
    StateFrame,
    WelcomeFrame,
    decode_client_frame,
)


def make(**overrides: Any) -> ClientProtocol:
    options: dict[str, Any] = {
        "session": None,
        "token": None,
        "client": None,
        "auth": None,
        "max_frame": 1 << 20,
        "max_pending": 1000,
        "ack_delay": 0.05,
        "ack_every": 4,
    }
    options.update(overrides)
    return ClientProtocol(**options)


def welcome(ack: int = 0, received: int | None = None, **overrides: Any) -> WelcomeFrame:
    options: dict[str, Any] = {
        "session": "s",
        "token": "t",
        "client": "c",
        "resumed": False,
        "state": "active",
        "ack": ack,
        "received": received,
        "heartbeat": 10.0,
        "window": 30.0,
    }
    options.update(overrides)
    return WelcomeFrame(**options)


def welcomed(**overrides: Any) -> ClientProtocol:
    state = make(**overrides)
    state.welcome(welcome())
    return state


def queue(state: ClientProtocol, data: Any) -> None:
    state.queue_message(encode_message_data(data))


def drain(state: ClientProtocol, now: float = 0.0) -> list[Any]:
    """Every frame the state sends now, decoded."""
    frames = []
    while (text := state.next_frame(now)) is not None:
        frames.append(decode_client_frame(text, max_frame=1 << 20))
    return frames


def msg_seqs(frames: list[Any]) -> list[int]:
    return [frame.seq for frame in frames if isinstance(frame, MsgFrame)]


def hello(state: ClientProtocol) -> Any:
    return decode_client_frame(state.hello(), max_frame=1 << 20)


def test_client_state_modules_import_no_trio() -> None:
    """The client's protocol state and its backoff import without trio."""
    code = textwrap.dedent(
        """
        import sys
        import statesession._client.state, statesession._client.backoff
        statesession._client.state.ClientProtocol(
            session=None, token=None, client=None, auth=None, max_frame=1024,
            max_pending=10, ack_delay=0.05, ack_every=4,
        )
        statesession._client.backoff.Backoff().delay(3)
        assert "trio" not in sys.modules, sorted(m for m in sys.modules if "trio" in m)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_client_state_hello_creates_joins_or_resumes() -> None:
    """No session: create; session and token: join with ack 0; with a client: resume."""
    assert hello(make()) == HelloFrame()
    joining = make(session="s", token="t")
    assert hello(joining) == HelloFrame(session="s", token="t", ack=0)
    resuming = make(session="s", token="t", client="c", auth={"k": 1})
    assert hello(resuming) == HelloFrame(
        session="s", token="t", client="c", auth={"k": 1}, resume=True
    )


def test_client_state_hello_after_a_welcome_resumes_from_what_was_received() -> None:
    """Once welcomed, every hello resumes as that client from the highest seq received."""
    state = make()
    state.welcome(welcome())
    assert hello(state) == HelloFrame(session="s", token="t", client="c", resume=True)
    assert state.on_frame(MsgFrame(seq=1, data="a")) is Effect.DELIVERED
    assert hello(state).ack == 1


def test_client_state_answers_to_hello() -> None:
    """A retryable refusal is tried again, a final one raises, a stray frame reconnects."""
    state = make()
    refusal = ErrorFrame(code="server_shutdown", message="later", fatal=True)
    assert state.on_answer(refusal) == "refused"
    assert state.on_answer(StateFrame(state="active")) == "unexpected"
    with pytest.raises(ResumeGapError):
        state.on_answer(ErrorFrame(code="resume_gap", message="gone", fatal=True))
    with pytest.raises(RemoteError) as info:
        state.on_answer(ErrorFrame(code="unknown_session", message="no", fatal=True))
    assert info.value.code == "unknown_session"
    assert not state.connected
    assert state.on_answer(welcome(inbox_messages=3, inbox_bytes=900)) == "welcomed"
    assert (state.connected, state.connects, state.session_id) == (True, 1, "s")
    assert (state.inbox_messages, state.inbox_bytes) == (3, 900)


def test_client_state_inbox_takes_each_message_once_in_order() -> None:
    """The stream starts where the server starts it; resends drop, a skip resumes."""
    state = welcomed()
    assert state.on_frame(MsgFrame(seq=7, data="g")) is Effect.DELIVERED
    assert state.on_frame(MsgFrame(seq=8, data="h")) is Effect.DELIVERED
    assert state.on_frame(MsgFrame(seq=8, data="h")) is Effect.NOTHING
    assert state.on_frame(MsgFrame(seq=10, data="j")) is Effect.SKIPPED
    assert state.received == 8
    assert list(state.inbox) == [(7, "g"), (8, "h")]


def test_client_state_ack_is_delayed_and_cumulative() -> None:
    """The first message taken arms ack_delay; ack_every taken send the ack at once."""
    state = welcomed(ack_delay=0.05, ack_every=3)
    for seq in range(1, 5):
        state.on_frame(MsgFrame(seq=seq, data=seq))
    assert state.take(10.0) == (1, True)
    assert state.ack_due == pytest.approx(10.05)
    assert state.take(10.01) == (2, False)
    assert state.ack_waiting
    assert state.next_frame(10.02) is None
    assert drain(state, 10.05) == [AckFrame(seq=2)]
    assert not state.ack_waiting
    assert state.take(10.1) == (3, True)
    assert state.take(10.1) == (4, False)
    state.on_frame(MsgFrame(seq=5, data=5))
    assert state.take(10.1) == (5, True)  # ack_every (3) taken since the last ack
    assert drain(state, 10.1) == [AckFrame(seq=5)]


def test_client_state_a_server_ping_makes_the_ack_due_at_once() -> None:
    """A ping is answered with a pong, and the next ack goes without its delay."""
    state = welcomed(ack_delay=60.0)
    state.on_frame(MsgFrame(seq=1, data="a"))
    assert state.on_frame(PingFrame()) is Effect.WRITE
    assert state.take(0.0) == ("a", True)
    assert drain(state, 0.0) == [AckFrame(seq=1), PongFrame()]


def test_client_state_next_frame_order_is_ack_control_then_messages() -> None:
    """A due ack goes before control frames, and those before the client's messages."""
    state = welcomed(ack_delay=0.0)
    queue(state, "m")
    state.on_frame(MsgFrame(seq=1, data="a"))
    state.take(0.0)
    state.say_bye("done")
    frames = drain(state)
    assert frames[:2] == [AckFrame(seq=1), ByeFrame(reason="done")]
    assert msg_seqs(frames) == [1]


def test_client_state_ack_goes_before_a_bye_without_its_delay() -> None:
    """Before a bye the ack for what was taken is sent at once."""
    state = welcomed(ack_delay=60.0)
    state.on_frame(MsgFrame(seq=1, data="a"))
    state.take(0.0)
    assert state.next_frame(0.0) is None
    state.say_bye(None)
    assert drain(state) == [AckFrame(seq=1), ByeFrame()]
    state.welcome(welcome(ack=0))
    assert drain(state) == [ByeFrame()]  # said again on the next connection


def test_client_state_window_keeps_within_the_session_inbox() -> None:
    """Pending messages stay within max_pending and the welcome's inbox bounds."""
    state = make(max_pending=5)
    cost = message_cost(encode_message_data("x" * 100))
    assert not state.window_full(cost)  # the inbox always takes one
    queue(state, "x" * 100)
    state.welcome(welcome(inbox_messages=3, inbox_bytes=10 * cost))
    queue(state, "x" * 100)
    queue(state, "x" * 100)
    assert state.window_full(1)
    state.drop_acknowledged(1)
    assert not state.window_full(1)
    assert state.window_full(state.inbox_bytes or 0)


def test_client_state_asks_for_the_ack_once_per_wait() -> None:
    """A sender waiting for room queues one ping, and again after an ack made room."""
    state = make()
    queue(state, 1)
    assert not state.ask_for_ack()  # not connected
    state.welcome(welcome())
    assert state.ask_for_ack()
    assert not state.ask_for_ack()
    assert state.on_frame(AckFrame(seq=1)) is Effect.ROOM
    assert state.on_frame(AckFrame(seq=1)) is Effect.NOTHING
    assert state.ask_for_ack()


def test_client_state_message_over_max_frame_keeps_its_seq() -> None:
    """A message whose frame is over max_frame raises and does not use up a seq."""
    state = make(max_frame=64)
    with pytest.raises(MessageTooLargeError):
        queue(state, "x" * 64)
    queue(state, "ok")
    assert [seq for seq, _, _ in state.pending] == [1]


def test_client_state_a_new_process_numbers_on_from_welcome_received() -> None:
    """Resuming with nothing pending, a new process continues after what was received."""
    state = make(session="s", token="t", client="c")
    state.welcome(welcome(ack=3, received=5))
    queue(state, "next")
    assert msg_seqs(drain(state)) == [6]


def test_client_state_welcome_keeps_received_messages_pending_but_unsent() -> None:
    """What the server received but has not acknowledged stays pending, not resent."""
    state = welcomed()
    for n in range(4):
        queue(state, n)
    assert msg_seqs(drain(state)) == [1, 2, 3, 4]
    state.disconnected()
    state.welcome(welcome(ack=1, received=3))
    assert [seq for seq, _, _ in state.pending] == [2, 3, 4]
    assert msg_seqs(drain(state)) == [4]


def test_client_state_passivated_goes_dormant_only_with_nothing_pending() -> None:
    """A passivated session lets an idle client go dormant, not one with pending messages."""
    state = welcomed()
    queue(state, "m")
    assert state.on_frame(StateFrame(state="passivated")) is Effect.NOTHING
    assert not state.dormant
    state.on_frame(AckFrame(seq=1))
    assert state.on_frame(StateFrame(state="passivated")) is Effect.DORMANT
    assert state.dormant
    assert state.state == "passivated"


def test_client_state_errors_and_the_end() -> None:
    """Final errors end the client, retryable ones reconnect, non-fatal ones are logged."""
    state = welcomed()
    final = ErrorFrame(code="bad_frame", message="no", fatal=True)
    assert state.on_frame(final) is Effect.FINAL
    again = ErrorFrame(code="server_shutdown", message="later", fatal=True)
    assert state.on_frame(again) is Effect.DROPPED
    note = ErrorFrame(code="bad_frame", message="ignored", fatal=False)
    assert state.on_frame(note) is Effect.REPORTED
    assert state.on_frame(ClosedFrame(reason="done")) is Effect.CLOSED
    assert state.state == "terminated"
    with pytest.raises(SessionClosedError):
        state.check()


def test_client_state_terminated_after_a_bye_is_a_clean_close() -> None:
    """A session that ended on our bye while we reconnected closes with reason bye."""
    state = welcomed()
    state.say_bye(None)
    state.fail(RemoteError("terminated", "gone"))
    assert (state.closed_reason, state.failure) == ("bye", None)
    other = welcomed()
    error = RemoteError("terminated", "gone")
    other.fail(error)
    assert other.failure is error
    with pytest.raises(RemoteError):
        other.check()


class ClientStateModel(RuleBasedStateMachine):
    """A client against a model server, over connections that can be cut at any point:
    the server takes its messages in order from each connection's wire, and a cut loses
    what is still on it."""

    def __init__(self) -> None:
        super().__init__()
        self.state = make()
        self.state.welcome(welcome())
        self.connected = True
        self.sent = 0  # messages queued
        self.acked = 0  # highest seq an ack (or welcome) gave the client
        self.server_received = 0
        self.server_acked = 0
        self.wire: deque[int] = deque()  # written on this connection, not yet received
        self.to_write: deque[int] = deque()  # what this connection must still send

    @rule(data=st.integers())
    def send(self, data: int) -> None:
        queue(self.state, data)
        self.sent += 1
        if self.connected:
            self.to_write.append(self.sent)

    @precondition(lambda self: self.connected)
    @rule()
    def write(self) -> None:
        """The writer sends the next frame: exactly the next message this connection owes."""
        text = self.state.next_frame(0.0)
        if text is None:
            assert not self.to_write
            return
        frame = decode_client_frame(text, max_frame=1 << 20)
        assert isinstance(frame, MsgFrame)
        assert frame.seq == self.to_write.popleft()
        self.wire.append(frame.seq)

    @rule()
    def arrive(self) -> None:
        """The server receives the oldest message on the wire: never a duplicate or a gap."""
        if self.wire:
            seq = self.wire.popleft()
            assert seq == self.server_received + 1
            self.server_received = seq

    @precondition(lambda self: self.connected)
    @rule(fraction=st.floats(0, 1))
    def ack(self, fraction: float) -> None:
        """The server acknowledges what its application took (at most what it received)."""
        seq = round(self.server_received * fraction)
        self.server_acked = max(self.server_acked, seq)
        self.state.on_frame(AckFrame(seq=seq))
        self.acked = max(self.acked, seq)

    @precondition(lambda self: self.connected)
    @rule()
    def cut(self) -> None:
        self.state.disconnected()
        self.connected = False
        self.wire.clear()
        self.to_write.clear()

    @precondition(lambda self: not self.connected)
    @rule(fraction=st.floats(0, 1))
    def reconnect(self, fraction: float) -> None:
        """A welcome resends exactly the unacknowledged messages above ``received``."""
        gap = self.server_received - self.server_acked
        self.server_acked += round(gap * fraction)
        frame = welcome(ack=self.server_acked, received=self.server_received, resumed=True)
        trial = copy.deepcopy(self.state)
        trial.welcome(frame)
        expected = list(range(self.server_received + 1, self.sent + 1))
        assert msg_seqs(drain(trial)) == expected
        self.state.welcome(frame)
        self.acked = max(self.acked, self.server_acked)
        self.connected = True
        self.to_write = deque(expected)

    @invariant()
    def pending_holds_exactly_the_unacknowledged_messages(self) -> None:
        state = self.state
        assert [seq for seq, _, _ in state.pending] == list(range(self.acked + 1, self.sent + 1))
        assert state.pending_bytes == sum(cost for _, _, cost in state.pending)
        assert state.next_seq == self.sent + 1
        for seq, text, _ in state.pending:
            frame = decode_client_frame(text, max_frame=1 << 20)
            assert isinstance(frame, MsgFrame)
            assert frame.seq == seq


TestClientStateModel = ClientStateModel.TestCase
