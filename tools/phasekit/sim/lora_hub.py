"""A simulated LoRa channel that processes share: a ``SimChannel`` served over a Unix socket.

``phasegate.lora.channel.SimChannel`` lives in one process. To put a real
``phasekit gateway run`` process (a LoRa gateway Pi, ``[lora] driver = "sim"``
with ``sim_socket``) on the same air as simulated nodes, ``LoraHub`` runs the
channel in the test's process and gives every connection a radio on it:
airtime, collisions, half duplex and loss are the channel's, whoever sends.
The client is ``phasegate.lora.radio.SocketChannelRadio``; the wire is its
(a name, then 2-byte length-prefixed packets both ways; an empty packet from
the hub ends a send once its airtime is over).

    channel = SimChannel(sf=7)
    async with LoraHub(channel, run_dir / "air.sock") as hub:  # on the running loop
        node_radio = channel.radio("n5")                    # nodes in this process, as before
        ...                                                  # gateway processes connect to the socket
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from phasegate.lora.channel import SimChannel, SimRadio

__all__ = ("LoraHub",)


class LoraHub:
    """Serve ``channel`` on the Unix socket ``path`` (``async with``, or ``start``/``close``)."""

    def __init__(self, channel: SimChannel, path: str | os.PathLike[str]):
        self.channel = channel
        self.path = str(path)
        self.clients: dict[str, int] = {}  # name -> packets it sent
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> LoraHub:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._client, self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()  # each handler's read ends, and with it the handler
        await asyncio.gather(*self._handlers, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        me = asyncio.current_task()
        if me is not None:
            self._handlers.add(me)
        self._writers.add(writer)
        try:
            n = (await reader.readexactly(1))[0]
            name = (await reader.readexactly(n)).decode("ascii", "replace")
            radio = self.channel.radio(name)
            self.clients[name] = 0
            down = asyncio.ensure_future(self._deliver(radio, writer))
            try:
                while True:
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    payload = await reader.readexactly(size)
                    await radio.send(payload)  # the channel's airtime and collisions
                    self.clients[name] += 1
                    writer.write(b"\x00\x00")  # sent: the client's send() returns
                    await writer.drain()
            finally:
                down.cancel()
                await asyncio.gather(down, return_exceptions=True)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()
            self._writers.discard(writer)
            if me is not None:
                self._handlers.discard(me)

    @staticmethod
    async def _deliver(radio: SimRadio, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while True:
                payload, _sender = await radio.recv()
                writer.write(len(payload).to_bytes(2, "big") + payload)
                await writer.drain()
