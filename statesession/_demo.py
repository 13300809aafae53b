"""The built-in demo app of ``statesession serve``: an agent-like echo that streams."""

from __future__ import annotations

import json

import trio

from ._session import Session

__all__ = ["WORD_INTERVAL", "demo"]

#: Seconds between the words of a reply: slow enough to see a resume happen.
WORD_INTERVAL = 0.2


async def demo(session: Session) -> None:
    """Answer each message by streaming the words of a reply, one every WORD_INTERVAL.

    Cut the connection in the middle of a reply and reconnect: the rest of the reply
    arrives, nothing twice.
    """
    await session.send({"hello": session.id, "hint": "send me anything"})
    async for message in session:
        text = message.data if isinstance(message.data, str) else json.dumps(message.data)
        session.data["turns"] = session.data.get("turns", 0) + 1
        words = f"you said: {text}".split()
        for index, word in enumerate(words):
            await session.send(
                {"turn": session.data["turns"], "word": word, "last": index == len(words) - 1}
            )
            await trio.sleep(WORD_INTERVAL)
