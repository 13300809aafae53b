"""The built-in demo app of ``statesession serve``: an agent-like echo that streams.

It keeps its place in ``session.data``, the part of a session that is saved with it, so
that a session brought back after a restart continues where it was: it does not greet
again, and it finishes the reply it was streaming. Each step updates that place in the
same breath as the ``send`` or ``receive`` it records -- with no checkpoint between --
so whenever the session is saved, what was sent and what the data says agree: nothing is
said twice or skipped.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from .._runtime.session import Session

__all__ = ["WORD_INTERVAL", "demo"]

#: Seconds between the words of a reply: slow enough to see a resume happen.
WORD_INTERVAL = 0.2


def _reply_to(data: Any) -> list[str]:
    text = data if isinstance(data, str) else json.dumps(data)
    return (
        f"you said: {text}. I stream my reply one word every {WORD_INTERVAL:g} s; cut the "
        "connection, or stop the server with Ctrl-C and start it again, and the rest of "
        "it still comes, every word once."
    ).split()


async def demo(session: Session) -> None:
    """Answer each message by streaming the words of a reply, one every WORD_INTERVAL.

    Cut the connection in the middle of a reply and reconnect, or restart the server:
    the rest of the reply arrives, nothing twice.
    """
    data = session.data
    if not data.get("greeted"):
        await session.send({"hello": session.id, "hint": "send me anything"})
        data["greeted"] = True
    while True:
        reply = data.get("reply")
        if reply is None:
            message = await session.receive()
            data["turns"] = turn = data.get("turns", 0) + 1
            data["reply"] = reply = {"turn": turn, "words": _reply_to(message.data), "next": 0}
        words = reply["words"]
        while reply["next"] < len(words):
            index = reply["next"]
            await session.send(
                {
                    "turn": reply["turn"],
                    "index": index,
                    "word": words[index],
                    "last": index == len(words) - 1,
                }
            )
            reply["next"] = index + 1
            await trio.sleep(WORD_INTERVAL)
        data["reply"] = None
