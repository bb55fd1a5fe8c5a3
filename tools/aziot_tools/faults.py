"""A loopback TCP proxy that breaks the link between a device and the hub on command.

    with FaultProxy(hub.port) as proxy:       # the device dials proxy.port
        proxy.drop()                          # FIN both ways
        proxy.reset()                         # RST both ways
        proxy.stall(3)                        # black hole: nothing passes for 3 s, nothing closes
        proxy.truncate()                      # half of the hub's next chunk, then close
        proxy.slow(2, 200)                    # for 2 s, a trickle of 200 bytes/s each way
        proxy.refuse(1.5)                     # for 1.5 s, new connections are closed at once
                                              # (with drop(): the hub unreachable for a while)

The faults Wi-Fi, NATs and a busy hub cause in the field, on loopback.
`accepts` records when each connection arrived (monotonic seconds) and
whether it was refused, so tests can check the device's retry schedule;
`records` lists every TLS record that passed untouched (direction, content
type, length), so tests can see Maximum Fragment Length at work.
"""

import asyncio
import socket
import struct
import threading
import time


class _Link:
    def __init__(self, down_reader, down_writer, up_reader, up_writer):
        self.down = (down_reader, down_writer)  # the device's side
        self.up = (up_reader, up_writer)  # the hub's side
        self.truncate = False
        self.closed = False
        self.pending = {True: bytearray(), False: bytearray()}  # bytes not yet a whole TLS record

    def writers(self):
        return self.down[1], self.up[1]


def _tls_records(buf: bytearray):
    """Take the whole TLS records off the front of buf: [(content type, length)]."""
    out = []
    while len(buf) >= 5:
        length = int.from_bytes(buf[3:5], "big")
        if len(buf) < 5 + length:
            break
        out.append((buf[0], length))
        del buf[:5 + length]
    return out

    def writers(self):
        return self.down[1], self.up[1]


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1", listen_port: int = 0):
        self.target = (target_host, target_port)
        self.listen_port = listen_port
        self.port = None
        self.accepts = []  # (monotonic time, refused?)
        self.faults = []  # (monotonic time, kind)
        self.closes = []  # (monotonic time, why the proxy ended a link)
        self.records = []  # (from the hub?, TLS content type, length): every record that passed
        self._links = set()
        self._tasks = set()
        self._stall_until = 0.0
        self._slow_until = 0.0
        self._slow_rate = 0
        self._refuse_until = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="aziot-faults", daemon=True)
        self._server = None

    # --- control, from any thread ------------------------------------------------

    def __enter__(self):
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc):
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _record(self, kind):
        self.faults.append((time.monotonic(), kind))

    def _on_loop(self, fn, *args):
        self._loop.call_soon_threadsafe(fn, *args)

    def drop(self):
        self._record("drop")
        self._on_loop(self._close_all, False)

    def reset(self):
        self._record("reset")
        self._on_loop(self._close_all, True)

    def stall(self, seconds: float):
        self._record("stall")
        self._stall_until = time.monotonic() + seconds

    def truncate(self):
        self._record("truncate")

        def mark():
            for link in self._links:
                link.truncate = True
        self._on_loop(mark)

    def slow(self, seconds: float, bytes_per_s: int):
        self._record("slow")
        self._slow_rate = bytes_per_s
        self._slow_until = time.monotonic() + seconds

    def refuse(self, seconds: float):
        self._record("refuse")
        self._refuse_until = time.monotonic() + seconds

    @property
    def live_links(self) -> int:
        return len(self._links)

    # --- the proxy, on its own event loop ------------------------------------------

    async def _start(self):
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.listen_port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self):
        self._server.close()
        self._close_all(False)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _close_all(self, rst: bool):
        for link in list(self._links):
            for writer in link.writers():
                if rst:
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()
        self._links.clear()

    async def _accept(self, reader, writer):
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass  # stopped with the proxy: asyncio would log the cancellation as an error
        finally:
            self._tasks.discard(task)

    async def _serve(self, reader, writer):
        refused = time.monotonic() < self._refuse_until
        self.accepts.append((time.monotonic(), refused))
        if refused:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()  # the hub is down (restarting): the device sees a closed connection
            return
        link = _Link(reader, writer, up_reader, up_writer)
        self._links.add(link)
        await asyncio.gather(self._pump(link, reader, up_writer, False),
                             self._pump(link, up_reader, writer, True), return_exceptions=True)
        self._links.discard(link)
        for w in link.writers():
            w.close()

    async def _pump(self, link, reader, writer, from_hub):
        side = "hub" if from_hub else "device"
        why = "end of stream from the " + side
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                while time.monotonic() < self._stall_until:  # black hole: hold it, close nothing
                    await asyncio.sleep(0.05)
                if link not in self._links:
                    why = "dropped by a fault"
                    break
                if from_hub and link.truncate:
                    writer.write(data[:max(1, len(data) // 2)])  # part of a TLS record, then gone
                    await writer.drain()
                    why = "truncated"
                    break
                while time.monotonic() < self._slow_until and data:
                    piece, data = data[:max(1, self._slow_rate // 20)], data[max(1, self._slow_rate // 20):]
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.05)
                if data:
                    writer.write(data)
                    await writer.drain()
                    link.pending[from_hub] += data
                    self.records.extend((from_hub, kind, length)
                                        for kind, length in _tls_records(link.pending[from_hub]))
        except (ConnectionError, OSError) as e:
            why = "%s from the %s" % (type(e).__name__, side)
        finally:
            if not link.closed:
                link.closed = True
                self.closes.append((time.monotonic(), why))
            for w in link.writers():
                w.close()
