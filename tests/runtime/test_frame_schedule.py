"""A connection's frame schedule: what goes next and the bad-frame budget, given ``now``,
with no channel."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

from statesession import ProtocolError, SessionConfig
from statesession._core.codec import PING_TEXT, PONG_TEXT
from statesession._core.delivery import ClientCursor, ReplayBuffer
from statesession._runtime.connection import Connection
from statesession._runtime.scheduling import BAD_FRAME_BURST, FrameSchedule

CONFIG = SessionConfig()
FINAL = '{"type":"closed","reason":"done"}'


class Schedule(FrameSchedule):
    """A frame schedule that counts its wakes and the bad frames it reports."""

    __slots__ = ("reported", "wakes")

    def __init__(self, *, ack_every: int = 4, now: float = 0.0) -> None:
        super().__init__(ack_every=ack_every, now=now)
        self.wakes = 0
        self.reported: list[str] = []

    def wake(self) -> None:
        self.wakes += 1

    def report_bad_frame(self, error: ProtocolError, now: float) -> None:
        self.reported.append(error.code)


def buffer_of(count: int, *, first: int = 1) -> ReplayBuffer:
    buffer = ReplayBuffer(max_messages=100, max_bytes=100_000, drop_oldest=True)
    buffer.restore(first, tuple(f"m{seq}" for seq in range(first, first + count)))
    return buffer


def welcome(schedule: FrameSchedule, cursor: ClientCursor, seen: int, now: float) -> str:
    """Welcome ``cursor``'s client; return the welcome's text (the next frame)."""
    schedule.welcome(
        cursor, seen, now, session_id="s1", token="t", client="c", resumed=True, config=CONFIG
    )
    assert schedule._control is not None
    return schedule._control[0]


def welcomed(seen: int = 0, *, processed: int = 0, ack_every: int = 4) -> Schedule:
    schedule = Schedule(ack_every=ack_every)
    welcome(schedule, ClientCursor(id="c", processed=processed, received=processed), seen, 0.0)
    return schedule


def texts(schedule: FrameSchedule, buffer: ReplayBuffer) -> list[str]:
    """Every frame sent until there is none, the welcome's type standing for it."""
    return [
        "welcome" if text.startswith('{"type":"welcome"') else text
        for text in drain(schedule, buffer)
    ]


def drain(schedule: FrameSchedule, buffer: ReplayBuffer, now: float = 0.0) -> list[str]:
    sent = []
    while True:
        text, last = schedule.next_frame(buffer, now)
        if text is None:
            return sent
        sent.append(text)
        if last:
            return sent


def test_frame_schedule_sends_the_welcome_first_then_replays_after_seen() -> None:
    """The welcome (saying the client's ack and the config's numbers) goes ahead of
    control frames queued before it, then the messages after the seq the client has
    seen, then nothing."""
    schedule = Schedule()
    schedule.queue(PING_TEXT)
    cursor = ClientCursor(id="c", processed=7, received=8)
    frame = json.loads(welcome(schedule, cursor, 2, 5.0))
    assert (frame["session"], frame["token"], frame["client"]) == ("s1", "t", "c")
    assert (frame["resumed"], frame["ack"], frame["received"]) == (True, 7, 8)
    assert frame["heartbeat"] == CONFIG.heartbeat_interval
    assert (cursor.ack_sent, cursor.ack_due) == (7, math.inf)
    assert (schedule.cursor, schedule.next_seq, schedule.last_received) == (cursor, 3, 5.0)
    assert texts(schedule, buffer_of(4)) == ["welcome", PING_TEXT, "m3", "m4"]
    assert schedule.next_seq == 5
    assert schedule._control is None


def test_frame_schedule_queue_wakes_the_writer() -> None:
    """Every control frame queued wakes the writer."""
    schedule = Schedule()
    schedule.queue("a")
    schedule.queue("b")
    assert schedule.wakes == 2


def test_frame_schedule_final_without_flush_goes_before_messages() -> None:
    """A final frame not to wait for the pending messages is the next frame after the
    control frames, and the last."""
    schedule = welcomed()
    schedule.finish_at(7.0, FINAL, flush=False, error="bad_frame")
    text, last = schedule.next_frame(buffer_of(3), 0.0)
    assert text is not None
    assert text.startswith('{"type":"welcome"')
    assert not last
    assert schedule.next_frame(buffer_of(3), 0.0) == (FINAL, True)
    assert (schedule.close_error, schedule._goodbye_since) == ("bad_frame", 7.0)


def test_frame_schedule_final_with_flush_goes_after_messages() -> None:
    """A flushed final frame waits for every pending message; the first end set stays."""
    schedule = welcomed()
    schedule.finish_at(1.0, FINAL, flush=True)
    schedule.finish_at(2.0, "other", flush=False, error="x")
    assert texts(schedule, buffer_of(2)) == ["welcome", "m1", "m2", FINAL]
    assert (schedule.close_error, schedule._goodbye_since) == (None, 1.0)


def test_frame_schedule_ack_waits_for_its_delay() -> None:
    """Processed messages are acknowledged once their ack is due, ahead of messages."""
    schedule = welcomed()
    schedule.next_frame(buffer_of(0), 0.0)  # the welcome
    cursor = schedule.cursor
    assert cursor is not None
    cursor.processed = 2
    cursor.ack_due = 10.0
    assert schedule.next_frame(buffer_of(1), 9.0) == ("m1", False)
    assert schedule.next_frame(buffer_of(2), 10.0) == ('{"type":"ack","seq":2}', False)
    assert (cursor.ack_sent, cursor.ack_due) == (2, math.inf)
    assert schedule.next_frame(buffer_of(2), 11.0) == ("m2", False)


def test_frame_schedule_ack_every_sends_at_once() -> None:
    """ack_every processed messages are acknowledged without waiting for the delay."""
    schedule = welcomed(ack_every=3)
    schedule.next_frame(buffer_of(0), 0.0)
    cursor = schedule.cursor
    assert cursor is not None
    cursor.processed = 2
    assert schedule.next_frame(buffer_of(0), 0.0) == (None, False)
    cursor.processed = 3
    assert schedule.next_frame(buffer_of(0), 0.0) == ('{"type":"ack","seq":3}', False)


def test_frame_schedule_acks_before_the_last_frame() -> None:
    """What is processed and not acknowledged is acknowledged before a flushed end."""
    schedule = welcomed()
    assert schedule.cursor is not None
    schedule.cursor.processed = 1
    schedule.finish_at(0.0, FINAL, flush=True)
    assert texts(schedule, buffer_of(0)) == ["welcome", '{"type":"ack","seq":1}', FINAL]


def test_frame_schedule_reack_acknowledges_a_duplicate_again() -> None:
    """A duplicate makes the ack go again at once, even with nothing new processed."""
    schedule = welcomed(processed=4)
    schedule.next_frame(buffer_of(0), 0.0)
    schedule.reack()
    assert schedule.wakes == 1
    assert schedule.next_frame(buffer_of(0), 0.0) == ('{"type":"ack","seq":4}', False)
    assert schedule.next_frame(buffer_of(0), 0.0) == (None, False)


def test_frame_schedule_replay_gap_is_a_fatal_resume_gap() -> None:
    """A message the buffer dropped before it was sent ends the connection with a
    resume_gap error (the end set before is replaced), reported as a bad frame."""
    schedule = welcomed(seen=1)
    schedule.finish_at(0.0, FINAL, flush=True)
    schedule.next_frame(buffer_of(0), 0.0)
    text, last = schedule.next_frame(buffer_of(3, first=5), 0.0)
    assert last
    assert text is not None
    frame = json.loads(text)
    assert (frame["type"], frame["code"]) == ("error", "resume_gap")
    assert "messages 2..4 were dropped" in frame["message"]
    assert (schedule.close_error, schedule.reported) == ("resume_gap", ["resume_gap"])


def test_frame_schedule_ping_waits_for_an_answer() -> None:
    """A ping is not sent again until a frame from the peer answered the last one."""
    schedule = welcomed()
    schedule.next_frame(buffer_of(0), 0.0)
    schedule.ping(1.0)
    schedule.ping(2.0)
    assert drain(schedule, buffer_of(0)) == [PING_TEXT]
    schedule.last_received = 3.0
    schedule.ping(4.0)
    assert (drain(schedule, buffer_of(0)), schedule.last_ping) == ([PING_TEXT], 4.0)


def test_frame_schedule_one_pong_answers_every_ping_queued() -> None:
    """Pings before the pong is sent get one pong; a ping makes the next ack due."""
    schedule = welcomed()
    schedule.next_frame(buffer_of(0), 0.0)
    schedule.pinged()
    schedule.pinged()
    assert schedule.cursor is not None
    assert schedule.cursor.ack_due == -math.inf
    assert drain(schedule, buffer_of(0)) == [PONG_TEXT]
    schedule.pinged()
    assert drain(schedule, buffer_of(0)) == [PONG_TEXT]


def test_frame_schedule_bad_frames_over_the_budget_become_fatal() -> None:
    """A burst of non-fatal bad frames is answered one by one, and the one over the
    budget ends the connection; the budget refills over time."""
    schedule = Schedule()
    error = ProtocolError("bad_frame", "nope")
    for _ in range(BAD_FRAME_BURST):
        assert schedule.escalate(error, 0.0) is error
    over = schedule.escalate(error, 0.0)
    assert over.fatal
    assert f"more than {BAD_FRAME_BURST} bad frames" in over.message
    assert "the last: nope" in over.message
    assert not schedule.escalate(error, 3.0).fatal  # refilled


def test_frame_schedule_fail_queues_or_ends() -> None:
    """A non-fatal error is queued as a control frame; a fatal one is the final frame."""
    schedule = Schedule()
    schedule.fail_at(ProtocolError("bad_frame", "nope"), 0.0)
    assert schedule._final is None
    schedule.fail_at(ProtocolError("frame_too_large", "big", fatal=True), 1.0)
    assert schedule.reported == ["bad_frame", "frame_too_large"]
    texts = drain(schedule, buffer_of(0))
    assert [json.loads(t)["code"] for t in texts] == ["bad_frame", "frame_too_large"]
    assert schedule.close_error == "frame_too_large"


def test_frame_schedule_adds_no_per_connection_dict() -> None:
    """Connection and its frame schedule are one slotted object (memory is a benchmarked
    requirement)."""
    assert all("__dict__" not in layer.__dict__ for layer in Connection.__mro__)
    assert all("__slots__" in layer.__dict__ for layer in Connection.__mro__[:-1])


def test_frame_schedule_imports_no_trio() -> None:
    """The frame schedule is sans-IO: it imports and runs without trio."""
    code = textwrap.dedent(
        """
        import sys
        from statesession._runtime.scheduling import FrameSchedule
        FrameSchedule(ack_every=4, now=0.0).escalate
        assert "trio" not in sys.modules, sorted(m for m in sys.modules if "trio" in m)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
