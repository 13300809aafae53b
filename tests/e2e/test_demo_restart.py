"""The README's promise, kept with the README's own client: stop `statesession serve`
with Ctrl-C in the middle of a reply, start it again, and the client resumes where it
was -- the rest of the reply arrives, nothing twice, no second greeting."""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
from pathlib import Path

import trio

from ..helpers import start_server
from ..runtime.test_restart import free_port

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_client(url: str) -> str:
    """The quick start's client program, pointed at ``url``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    (client,) = [b for b in blocks if "trio.run(main)" in b and "open_client(" in b]
    assert "ws://127.0.0.1:8765/" in client
    return client.replace("ws://127.0.0.1:8765/", url)


async def test_demo_resumes_mid_reply_after_ctrl_c_and_a_restart(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) while the demo streams its reply, then a new server on the same
    store: the README's client prints the greeting once and every word of the reply
    once, in order, and ends by itself."""
    args = ("--store", str(tmp_path / "statesession.db"), "--port", str(free_port()))
    first, url, _ = await start_server(*args, cwd=tmp_path)
    second = None
    client = await trio.lowlevel.open_process(
        [sys.executable, "-c", readme_client(url)], stdout=subprocess.PIPE, cwd=tmp_path
    )
    try:
        assert client.stdout is not None
        printed = b""
        with trio.fail_after(30):
            while b"'word'" not in printed:  # the reply has begun
                chunk = await client.stdout.receive_some()
                assert chunk, "the client ended before the reply began"
                printed += chunk
            first.send_signal(signal.SIGINT)
            assert await first.wait() == 0
            second, _, _ = await start_server(*args, cwd=tmp_path)
            while chunk := await client.stdout.receive_some():
                printed += chunk
            assert await client.wait() == 0
    finally:
        for process in (first, second, client):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
    replies = [ast.literal_eval(line) for line in printed.decode().splitlines()]
    greetings = [r for r in replies if "hello" in r]
    words = [r for r in replies if "word" in r]
    assert len(greetings) == 1, replies
    assert words, replies
    assert words[-1]["last"] is True
    assert sum(1 for w in words if w["last"]) == 1
    assert [w["index"] for w in words] == list(range(len(words))), replies
    assert len(words) > 3  # long enough that the restart landed mid-reply
