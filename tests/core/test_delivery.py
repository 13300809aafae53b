"""Replay buffer and client cursors: the sans-IO core of exactly-once delivery."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from statesession import ProtocolError
from statesession._core.delivery import Delivery, ReplayBuffer


def frame(n: int, size: int = 10) -> str:
    return str(n).rjust(size, "x")


def test_replay_buffer_numbers_messages_from_one() -> None:
    """The replay buffer numbers messages from 1 and keeps counting after trims empty it;
    trim(n) drops through seq n and returns how many."""
    buffer = ReplayBuffer(max_messages=10, max_bytes=1000, drop_oldest=False)
    assert (buffer.first_seq, buffer.last_seq, len(buffer)) == (1, 0, 0)
    assert [buffer.append(frame(i)) for i in range(3)] == [1, 2, 3]
    assert list(buffer.frames_after(1)) == [(2, frame(1)), (3, frame(2))]
    assert buffer.trim(2) == 2
    assert (buffer.first_seq, buffer.last_seq, buffer.nbytes) == (3, 3, 10)
    assert buffer.trim(3) == 1
    assert (buffer.first_seq, buffer.last_seq, len(buffer)) == (4, 3, 0)
    assert buffer.append(frame(9)) == 4


def test_replay_buffer_backpressure_refuses_to_overfill() -> None:
    """With backpressure the caller must wait for room; appending anyway is a bug."""
    buffer = ReplayBuffer(max_messages=2, max_bytes=1000, drop_oldest=False)
    buffer.append(frame(1))
    buffer.append(frame(2))
    assert not buffer.has_room(10)
    with pytest.raises(RuntimeError, match="wait for has_room"):
        buffer.append(frame(3))


def test_replay_buffer_bytes_limit_counts() -> None:
    """has_room counts the bytes held against max_bytes: 20 of 25 held leaves room for 5, not
    10."""
    buffer = ReplayBuffer(max_messages=100, max_bytes=25, drop_oldest=False)
    buffer.append(frame(1))
    buffer.append(frame(2))
    assert not buffer.has_room(10)
    assert buffer.has_room(5)


def test_replay_buffer_drop_oldest_evicts_and_counts() -> None:
    """With drop_oldest the buffer keeps the newest max_messages, counts the dropped ones, and
    holds_after says which resume points it still covers."""
    buffer = ReplayBuffer(max_messages=2, max_bytes=1000, drop_oldest=True)
    for i in range(5):
        buffer.append(frame(i))
    assert (buffer.first_seq, buffer.last_seq, buffer.dropped) == (4, 5, 3)
    assert not buffer.holds_after(2)
    assert buffer.holds_after(3)


def make_delivery(**kw: int | bool) -> Delivery:
    options: dict[str, int | bool] = {
        "max_messages": 10,
        "max_bytes": 10_000,
        "drop_oldest": False,
        "max_clients": 3,
    }
    options.update(kw)
    return Delivery(**options)  # type: ignore[arg-type]


def test_delivery_new_client_starts_after_the_latest_message() -> None:
    """A client joining without ack gets only new messages; with ack=0, everything held."""
    delivery = make_delivery()
    _, seen = delivery.admit("a", None, resume=False)
    assert seen == 0
    delivery.buffer.append(frame(1))
    _, seen_b = delivery.admit("b", None, resume=False)
    assert seen_b == 1
    _, seen_c = delivery.admit("c", 0, resume=False)
    assert seen_c == 0


def test_delivery_new_client_with_ack_zero_gets_everything_still_held() -> None:
    """A client joining with ack=0 after messages were trimmed starts at the oldest held
    one: it joins mid-stream, it is not resuming."""
    delivery = make_delivery()
    a, _ = delivery.admit("a", None, resume=False)
    for i in range(4):
        delivery.buffer.append(frame(i))
    delivery.acknowledge(a, 2)
    _, seen = delivery.admit("b", 0, resume=False)
    assert seen == 2
    assert [seq for seq, _ in delivery.buffer.frames_after(seen)] == [3, 4]


def test_delivery_refused_hello_changes_nothing() -> None:
    """Validation comes before any change: a refused client does not evict another."""
    delivery = make_delivery(max_clients=2)
    a, _ = delivery.admit("a", None, resume=False)
    delivery.admit("b", None, resume=False)
    delivery.attached(a)
    with pytest.raises(ProtocolError, match="no longer remembers"):
        delivery.admit("c", 5, resume=True)
    assert set(delivery.clients) == {"a", "b"}
    with pytest.raises(ProtocolError):
        delivery.check("b", 9, resume=True)
    assert delivery.clients["b"].acked == 0


def test_delivery_trims_only_what_every_client_acknowledged() -> None:
    """The buffer is trimmed only through the lowest seq every client acknowledged, and a stale
    ack changes nothing."""
    delivery = make_delivery()
    a, _ = delivery.admit("a", None, resume=False)
    b, _ = delivery.admit("b", None, resume=False)
    for i in range(4):
        delivery.buffer.append(frame(i))
    delivery.acknowledge(a, 4)
    assert len(delivery.buffer) == 4
    delivery.acknowledge(b, 2)
    assert delivery.buffer.first_seq == 3
    delivery.acknowledge(b, 1)  # a stale ack changes nothing
    assert delivery.buffer.first_seq == 3


def test_delivery_resume_ack_trims_the_buffer() -> None:
    """Resuming with ack=n acknowledges up to n: those messages leave the buffer (else a
    backpressured sender would wait forever)."""
    delivery = make_delivery()
    a, _ = delivery.admit("a", None, resume=False)
    delivery.attached(a)
    for i in range(3):
        delivery.buffer.append(frame(i))
    delivery.detached(a, now=0)
    delivery.admit("a", 3, resume=True)
    assert len(delivery.buffer) == 0


def test_delivery_ack_beyond_what_was_sent_is_a_bad_frame() -> None:
    """An ack beyond the last seq sent is a bad_frame ProtocolError."""
    delivery = make_delivery()
    a, _ = delivery.admit("a", None, resume=False)
    with pytest.raises(ProtocolError, match="sent only up to seq 0") as info:
        delivery.acknowledge(a, 1)
    assert info.value.code == "bad_frame"


def test_delivery_resume_from_a_dropped_message_is_a_gap() -> None:
    """A resume needing a message no longer held is refused with resume_gap."""
    delivery = make_delivery(max_messages=2, drop_oldest=True)
    delivery.admit("a", None, resume=False)
    for i in range(5):
        delivery.buffer.append(frame(i))
    with pytest.raises(ProtocolError, match=r"messages 2\.\.3 are no longer held") as info:
        delivery.admit("a", 1, resume=True)
    assert info.value.code == "resume_gap"
    assert info.value.fatal
    _, seen = delivery.admit("a", 3, resume=True)
    assert seen == 3


def test_delivery_resume_claiming_unsent_messages_is_refused() -> None:
    """A resume claiming messages the session never sent is refused with ProtocolError."""
    delivery = make_delivery()
    delivery.admit("a", None, resume=False)
    with pytest.raises(ProtocolError, match="sent only up to seq 0"):
        delivery.admit("a", 5, resume=True)


def test_delivery_forgotten_client_cannot_resume() -> None:
    """A client away longer than the window is forgotten; its resume is a gap."""
    delivery = make_delivery()
    a, _ = delivery.admit("a", None, resume=False)
    delivery.attached(a)
    delivery.buffer.append(frame(1))
    delivery.detached(a, now=10)
    delivery.forget_stale(now=39, window=30)
    assert "a" in delivery.clients
    delivery.forget_stale(now=40, window=30)
    assert "a" not in delivery.clients
    with pytest.raises(ProtocolError, match="no longer remembers client 'a'"):
        delivery.admit("a", 1, resume=True)


def test_delivery_remembers_at_most_max_clients() -> None:
    """A full session evicts its longest-detached client, or refuses if all are attached."""
    delivery = make_delivery(max_clients=2)
    a, _ = delivery.admit("a", None, resume=False)
    b, _ = delivery.admit("b", None, resume=False)
    delivery.attached(a)
    delivery.attached(b)
    with pytest.raises(ProtocolError, match="2 clients attached") as info:
        delivery.admit("c", None, resume=False)
    assert info.value.code == "session_limit"
    delivery.detached(b, now=5)
    delivery.admit("c", None, resume=False)
    assert set(delivery.clients) == {"a", "c"}


def test_delivery_client_messages_are_processed_once_in_order() -> None:
    """A client's seq is new once and a duplicate after; a skipped seq is a fatal ProtocolError
    and leaves the count as it was."""
    delivery = make_delivery()
    a, _ = delivery.admit("a", None, resume=False)
    assert delivery.receive(a, 1) == "new"
    assert delivery.receive(a, 1) == "duplicate"
    assert delivery.receive(a, 2) == "new"
    with pytest.raises(ProtocolError, match="jumped from 2 to 4") as info:
        delivery.receive(a, 4)
    assert info.value.fatal
    assert a.received == 2


class DeliveryModel(RuleBasedStateMachine):
    """Sends, acks, drops and resumes: every client sees each message exactly once, in
    order, or is told resume_gap."""

    def __init__(self) -> None:
        super().__init__()
        self.delivery = make_delivery(max_messages=6, drop_oldest=True, max_clients=4)
        self.sent: list[str] = []
        # what each client has processed (by seq), and whether it is connected
        self.seen: dict[str, list[int]] = {}
        self.online: dict[str, int] = {}  # client -> next seq its connection will send
        self.gapped: set[str] = set()

    @rule(client=st.sampled_from(["a", "b", "c"]))
    def connect(self, client: str) -> None:
        if client in self.online or client in self.gapped:
            return
        resume = client in self.seen  # it was admitted before: it continues
        ack = self.seen[client][-1] if self.seen.get(client) else None
        try:
            cursor, seen = self.delivery.admit(client, ack, resume=resume)
        except ProtocolError as exc:
            assert exc.code == "resume_gap"
            assert client in self.seen
            self.gapped.add(client)
            return
        self.delivery.attached(cursor)
        self.seen.setdefault(client, [])
        self.online[client] = seen + 1

    @rule()
    def send(self) -> None:
        text = f"m{len(self.sent) + 1}"
        self.sent.append(text)
        self.delivery.buffer.append(text)

    @rule(client=st.sampled_from(["a", "b", "c"]))
    def deliver_one(self, client: str) -> None:
        """The client's connection sends it its next message, if still held."""
        if client not in self.online:
            return
        seq = self.online[client]
        buffer = self.delivery.buffer
        if seq > buffer.last_seq:
            return
        if seq < buffer.first_seq:
            self.gapped.add(client)
            self.disconnect(client)
            return
        assert buffer.frame(seq) == f"m{seq}"
        self.seen[client].append(seq)
        self.online[client] = seq + 1

    @rule(client=st.sampled_from(["a", "b", "c"]))
    def ack(self, client: str) -> None:
        if client in self.online and self.seen[client]:
            self.delivery.acknowledge(self.delivery.clients[client], self.seen[client][-1])

    @rule(client=st.sampled_from(["a", "b", "c"]))
    def disconnect(self, client: str) -> None:
        if client in self.online:
            del self.online[client]
            self.delivery.detached(self.delivery.clients[client], now=0)

    @invariant()
    def each_client_saw_a_gapless_prefix(self) -> None:
        for client, seqs in self.seen.items():
            if seqs:
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (client, seqs)
            assert len(set(seqs)) == len(seqs)

    @invariant()
    def buffer_holds_nothing_every_client_acknowledged(self) -> None:
        clients = self.delivery.clients
        if clients and len(self.delivery.buffer):
            assert self.delivery.buffer.first_seq > min(c.acked for c in clients.values())

    @invariant()
    def buffer_holds_a_contiguous_suffix(self) -> None:
        buffer = self.delivery.buffer
        held = list(buffer.frames_after(0))
        assert [seq for seq, _ in held] == list(range(buffer.first_seq, buffer.last_seq + 1))
        assert all(text == f"m{seq}" for seq, text in held)
        assert buffer.nbytes == sum(len(text) for _, text in held)
        assert len(buffer) <= 6


TestDeliveryModel = DeliveryModel.TestCase
