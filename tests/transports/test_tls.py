"""wss:// end to end, on both WebSocket transports, with certificates made for the test."""

from __future__ import annotations

import ssl
from functools import partial

import pytest
import trio
import trustme

import statesession
from statesession import ChannelBrokenError

from ..e2e.test_e2e import WS_TRANSPORTS, echo


@pytest.mark.parametrize("name", WS_TRANSPORTS)
async def test_wss_round_trip_and_an_untrusted_certificate_is_refused(name: str) -> None:
    """Over wss a message round-trips; a client that does not trust the certificate is refused
    (an SSLError) and the server keeps serving."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    kind = type(statesession.load_transport(name))
    transport = kind(ssl_context=server_context, client_ssl_context=client_context)  # type: ignore[call-arg]
    async with trio.open_nursery() as nursery, statesession.open_manager(echo) as manager:
        url = await nursery.start(
            partial(statesession.serve, manager, "wss://127.0.0.1:0/", transport=transport)
        )
        assert url.startswith("wss://127.0.0.1:")
        async with statesession.open_client(url, transport=transport) as client:
            await client.send({"over": "tls"})
            with trio.fail_after(10):
                assert await client.receive() == {"over": "tls"}
        untrusting = kind()
        with pytest.raises(ChannelBrokenError, match="certificate") as info, trio.fail_after(10):
            await untrusting.connect(url, nursery=nursery, max_frame=65536)
        assert isinstance(info.value.__cause__, ssl.SSLError)
        # The refused handshake ended only that connection.
        async with statesession.open_client(url, transport=transport) as client:
            await client.send("still serving")
            with trio.fail_after(10):
                assert await client.receive() == "still serving"
        nursery.cancel_scope.cancel()
