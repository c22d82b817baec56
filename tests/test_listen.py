"""DnsListener: round trips, deferred and pipelined answers, every bound, hostile input, leaks.

The handler here speaks a toy protocol instead of DNS (the listener never looks inside a
message): ``b"echo:X"`` answers ``b"re:X"``, ``b"slow:S:X"`` answers ``b"re:X"`` after S
seconds, and so on (see :class:`Toy`).
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from srvwatch.address import format_hostport
from srvwatch.listen import CLOSE, DnsListener, Peer, Reply

pytestmark = pytest.mark.anyio

TIMEOUT = 2.0


class Toy:
    """A handler that does what each query says, and remembers what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, Peer, bool]] = []
        self.gate = anyio.Event()

    def __call__(self, query: bytes, peer: Peer, tcp: bool) -> Reply | Awaitable[Reply]:
        self.calls.append((query, peer, tcp))
        verb, _, arg = query.partition(b":")
        if verb == b"echo":
            return b"re:" + arg
        if verb == b"two":
            return [b"first:" + arg, b"second:" + arg]
        if verb == b"slow":
            delay, _, rest = arg.partition(b":")
            return self._later(float(delay), b"re:" + rest)
        if verb == b"gated":
            return self._gated(b"re:" + arg)
        if verb == b"slowclose":
            return self._later(float(arg), CLOSE)
        if verb == b"big":
            return b"x" * int(arg)
        if verb == b"close":
            return CLOSE
        if verb == b"boom":
            raise RuntimeError("handler bug")
        if verb == b"bad":
            return 42  # type: ignore[return-value]
        if verb == b"peer":
            return repr((peer[0], tcp)).encode()
        return None  # garbage, drops

    @staticmethod
    async def _later(delay: float, reply: Reply) -> Reply:
        await anyio.sleep(delay)
        return reply

    async def _gated(self, reply: bytes) -> Reply:
        await self.gate.wait()
        return reply


def frame(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


async def read_frame(stream: anyio.abc.ByteReceiveStream, buf: bytearray) -> bytes:
    while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
        buf += await stream.receive()
    size = int.from_bytes(buf[:2], "big")
    data = bytes(buf[2 : 2 + size])
    del buf[: 2 + size]
    return data


async def udp_ask(lst: DnsListener, query: bytes, replies: int = 1) -> list[bytes]:
    async with await anyio.create_connected_udp_socket(
        remote_host=lst.host, remote_port=lst.port
    ) as sock:
        await sock.send(query)
        with anyio.fail_after(TIMEOUT):
            return [await sock.receive() for _ in range(replies)]


async def tcp_ask(lst: DnsListener, *queries: bytes, replies: int | None = None) -> list[bytes]:
    """Send ``queries`` on one connection; read ``replies`` (default: one per query)."""
    buf = bytearray()
    async with await anyio.connect_tcp(lst.host, lst.port) as stream:
        await stream.send(b"".join(frame(q) for q in queries))
        with anyio.fail_after(TIMEOUT):
            return [await read_frame(stream, buf) for _ in range(replies or len(queries))]


async def eventually(predicate: Callable[[], bool]) -> None:
    for _ in range(round(TIMEOUT / 0.01)):
        if predicate():
            return
        await anyio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def assert_closed_by_server(stream: anyio.abc.SocketStream, within: float) -> None:
    with anyio.fail_after(within):
        try:
            while await stream.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            return


def assert_balanced(lst: DnsListener) -> None:
    s = lst.stats()
    assert s["sockets_opened"] == s["sockets_closed"] >= 2, s
    assert s["connections_opened"] == s["connections_closed"], s
    assert s["tasks_started"] == s["tasks_finished"], s
    assert s["connections_open"] == 0, s
    assert s["deferred_in_flight"] == 0, s


# -- round trips -----------------------------------------------------------------------------


async def test_udp_and_tcp_round_trips_on_one_port() -> None:
    toy = Toy()
    async with DnsListener(toy) as lst:
        assert lst.port != 0
        assert await udp_ask(lst, b"echo:u") == [b"re:u"]
        assert await tcp_ask(lst, b"echo:t") == [b"re:t"]
        assert await udp_ask(lst, b"peer") == [repr(("127.0.0.1", False)).encode()]
        assert await tcp_ask(lst, b"peer") == [repr(("127.0.0.1", True)).encode()]
        assert await udp_ask(lst, b"two:u", 2) == [b"first:u", b"second:u"]
        assert await tcp_ask(lst, b"two:t", replies=2) == [b"first:t", b"second:t"]
        s = lst.stats()
        assert (s["udp_queries"], s["udp_replies"]) == (3, 4), s
        assert (s["tcp_queries"], s["tcp_replies"]) == (3, 4), s
    assert_balanced(lst)


async def test_ipv6_loopback_and_address_forms() -> None:
    async with DnsListener(Toy(), "::1") as lst:
        assert lst.address == f"[::1]:{lst.port}"
        assert await udp_ask(lst, b"echo:6") == [b"re:6"]
        assert await tcp_ask(lst, b"echo:6") == [b"re:6"]
    assert format_hostport("10.0.0.1", 53) == "10.0.0.1:53"


async def test_deferred_udp_answer_does_not_block_others() -> None:
    async with DnsListener(Toy()) as lst:
        fast_elapsed: list[float] = []

        async def fast() -> None:
            await anyio.sleep(0.05)
            start = anyio.current_time()
            assert await udp_ask(lst, b"echo:fast") == [b"re:fast"]
            fast_elapsed.append(anyio.current_time() - start)

        async with anyio.create_task_group() as tg:
            tg.start_soon(fast)
            start = anyio.current_time()
            assert await udp_ask(lst, b"slow:0.3:slow") == [b"re:slow"]
            assert anyio.current_time() - start >= 0.29
        assert fast_elapsed[0] < 0.2
    assert_balanced(lst)


async def test_tcp_pipelining_answers_out_of_order() -> None:
    async with DnsListener(Toy()) as lst:
        replies = await tcp_ask(lst, b"slow:0.3:a", b"slow:0.1:b", b"echo:c", b"slow:0.2:d")
        assert replies == [b"re:c", b"re:b", b"re:d", b"re:a"]
    assert_balanced(lst)


async def test_concurrent_large_answers_on_one_connection_are_never_interleaved() -> None:
    """Twenty 60 KB answers finish at the same instant: each arrives whole, framed."""
    sizes = [60_000 + i for i in range(20)]

    def handler(query: bytes, peer: Peer, tcp: bool) -> Awaitable[Reply]:
        size = int(query)

        async def later() -> Reply:
            await anyio.sleep(0.1)
            return bytes([size % 256]) * size

        return later()

    async with DnsListener(handler) as lst:
        replies = await tcp_ask(lst, *(str(n).encode() for n in sizes))
        assert sorted(len(r) for r in replies) == sizes
        assert all(r == bytes([len(r) % 256]) * len(r) for r in replies)
    assert_balanced(lst)


async def test_65535_byte_messages_both_ways_and_oversized_replies_dropped() -> None:
    toy = Toy()
    async with DnsListener(toy) as lst:
        query = b"echo:" + bytes(65535 - 5)
        (reply,) = await tcp_ask(lst, query)
        assert reply == b"re:" + bytes(65535 - 5)
        assert toy.calls[-1][0] == query
        (reply,) = await tcp_ask(lst, b"big:65535")
        assert len(reply) == 65535
        # A reply that cannot be framed is dropped and counted; the connection goes on.
        assert await tcp_ask(lst, b"big:65536", b"echo:after", replies=1) == [b"re:after"]
        assert lst.stats()["oversized"] == 1
    assert_balanced(lst)


async def test_none_close_and_drops() -> None:
    async with DnsListener(Toy()) as lst:
        async with await anyio.create_connected_udp_socket(
            remote_host=lst.host, remote_port=lst.port
        ) as sock:
            for query in (b"nothing", b"close", b"slowclose:0.01", b"echo:last"):
                await sock.send(query)
            with anyio.fail_after(TIMEOUT):
                assert await sock.receive() == b"re:last"  # the others got no reply
        # TCP: CLOSE closes the connection and abandons the answers in flight on it.
        async with await anyio.connect_tcp(lst.host, lst.port) as stream:
            await stream.send(frame(b"slow:0.2:lost") + frame(b"echo:x") + frame(b"close"))
            buf = bytearray()
            with anyio.fail_after(TIMEOUT):
                assert await read_frame(stream, buf) == b"re:x"
            await assert_closed_by_server(stream, TIMEOUT)
        async with await anyio.connect_tcp(lst.host, lst.port) as stream:
            await stream.send(frame(b"slowclose:0.1"))
            await assert_closed_by_server(stream, TIMEOUT)
    assert_balanced(lst)


# -- bounds ----------------------------------------------------------------------------------


async def test_connection_bound_closes_the_excess_at_once() -> None:
    async with DnsListener(Toy(), max_connections=2) as lst:
        streams = [await anyio.connect_tcp(lst.host, lst.port) for _ in range(2)]
        try:
            buf = bytearray()
            for i, stream in enumerate(streams):  # both accepted and served
                await stream.send(frame(b"echo:%d" % i))
                with anyio.fail_after(TIMEOUT):
                    assert await read_frame(stream, buf) == b"re:%d" % i
            async with await anyio.connect_tcp(lst.host, lst.port) as extra:
                await assert_closed_by_server(extra, TIMEOUT)
            assert lst.stats()["connections_rejected"] == 1
            assert lst.stats()["connections_open"] == 2
        finally:
            for stream in streams:
                await stream.aclose()
        # Once the clients leave, their places are free again.
        await eventually(lambda: lst.stats()["connections_open"] == 0)
        assert await tcp_ask(lst, b"echo:again") == [b"re:again"]
    assert_balanced(lst)


async def test_idle_connection_is_closed_at_the_idle_timeout() -> None:
    async with DnsListener(Toy(), idle_timeout=0.2) as lst:
        async with await anyio.connect_tcp(lst.host, lst.port) as stream:
            start = anyio.current_time()
            await stream.send(frame(b"echo:1"))  # a served query restarts the clock
            await assert_closed_by_server(stream, TIMEOUT)
            assert 0.19 <= anyio.current_time() - start < 1.0
        assert lst.stats()["connections_idle"] == 1
    assert_balanced(lst)


async def test_slow_loris_is_closed_at_the_idle_timeout() -> None:
    """Part of a message, then a byte now and then: the deadline covers the whole message."""
    async with DnsListener(Toy(), idle_timeout=0.3) as lst:
        async with await anyio.connect_tcp(lst.host, lst.port) as stream:
            start = anyio.current_time()
            await stream.send(frame(b"echo:" + bytes(100))[:20])

            async def drip() -> None:
                with anyio.fail_after(TIMEOUT):
                    for _ in range(100):
                        await anyio.sleep(0.05)
                        await stream.send(b"\x00")

            with pytest.raises((anyio.BrokenResourceError, OSError)):
                await drip()
            assert anyio.current_time() - start < 1.0
        assert lst.stats()["connections_idle"] == 1
        # A half-sent length prefix is just as stalled.
        async with await anyio.connect_tcp(lst.host, lst.port) as stream:
            await stream.send(b"\x00")
            await assert_closed_by_server(stream, TIMEOUT)
        assert lst.stats()["connections_idle"] == 2
    assert_balanced(lst)


async def test_client_that_never_reads_is_closed() -> None:
    """Replies pile up in the kernel until a write stalls; then the idle timeout ends it."""
    async with DnsListener(Toy(), idle_timeout=0.3) as lst:
        sock = socket.create_connection((lst.host, lst.port))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            sent = 0
            with anyio.fail_after(10):
                while lst.stats()["connections_idle"] == 0:
                    if sent < 2000:  # up to 128 MB of replies asked for, never read
                        try:
                            sock.send(frame(b"big:65535"))
                            sent += 1
                        except BlockingIOError:
                            pass
                    await anyio.sleep(0.01)
            assert lst.stats()["tcp_replies"] < sent
        finally:
            sock.close()
        await eventually(lambda: lst.stats()["connections_open"] == 0)
    assert_balanced(lst)


async def test_in_flight_bound_per_connection_stops_reading() -> None:
    toy = Toy()
    async with DnsListener(toy, max_in_flight=2) as lst:
        async with await anyio.connect_tcp(lst.host, lst.port) as stream:
            await stream.send(b"".join(frame(b"gated:%d" % i) for i in range(5)))
            await eventually(lambda: len(toy.calls) >= 3)
            await anyio.sleep(0.05)
            # Two in flight, the third read and waiting for a slot, the rest not read yet.
            assert len(toy.calls) == 3
            assert lst.stats()["deferred_in_flight"] == 2
            toy.gate.set()
            buf = bytearray()
            with anyio.fail_after(TIMEOUT):
                replies = {await read_frame(stream, buf) for _ in range(5)}
            assert replies == {b"re:%d" % i for i in range(5)}
    assert_balanced(lst)


async def test_close_while_reading_waits_for_an_in_flight_slot() -> None:
    """The query read but not started is dropped cleanly (its coroutine closed, no warning)."""
    toy = Toy()
    lst = DnsListener(toy, max_in_flight=1)
    await lst.start()
    try:
        async with await anyio.connect_tcp(lst.host, lst.port) as stream:
            await stream.send(frame(b"gated:1") + frame(b"gated:2"))
            await eventually(lambda: len(toy.calls) == 2)
            await lst.aclose()
            await assert_closed_by_server(stream, TIMEOUT)
    finally:
        await lst.aclose()
    assert lst.stats()["deferred_dropped"] == 1
    assert_balanced(lst)


async def test_deferred_bound_drops_the_excess() -> None:
    toy = Toy()
    async with DnsListener(toy, max_deferred=1) as lst:
        async with await anyio.create_connected_udp_socket(
            remote_host=lst.host, remote_port=lst.port
        ) as sock:
            await sock.send(b"gated:a")
            await sock.send(b"gated:b")  # over the bound: dropped, its coroutine closed
            await sock.send(b"echo:c")  # answered at once: not deferred
            with anyio.fail_after(TIMEOUT):
                assert await sock.receive() == b"re:c"
            assert lst.stats()["deferred_dropped"] == 1
            toy.gate.set()
            with anyio.fail_after(TIMEOUT):
                assert await sock.receive() == b"re:a"
    assert_balanced(lst)


async def test_udp_burst_is_fully_answered() -> None:
    """A thousand datagrams at once: the big socket buffers hold them, every one is answered.

    The client is a plain socket with a big buffer too: anyio's asyncio UDP socket would
    queue only 100 replies.
    """
    async with DnsListener(Toy()) as lst:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setblocking(False)
            sock.connect((lst.host, lst.port))
            for i in range(1000):
                sock.send(b"echo:%d" % i)
            got: set[bytes] = set()
            with anyio.fail_after(TIMEOUT):
                for _ in range(1000):
                    await anyio.wait_readable(sock)
                    got.add(sock.recv(100))
        assert got == {b"re:%d" % i for i in range(1000)}
        assert lst.stats()["udp_queries"] == 1000
    assert_balanced(lst)


# -- hostile input ---------------------------------------------------------------------------


async def test_hostile_bytes_and_handler_faults_never_stop_it() -> None:
    rng = random.Random(7766)
    toy = Toy()
    async with DnsListener(toy, idle_timeout=0.5) as lst:
        async with await anyio.create_connected_udp_socket(
            remote_host=lst.host, remote_port=lst.port
        ) as sock:
            for size in (0, 1, 2, 11, 12, 512, 1500, 65000):
                await sock.send(rng.randbytes(size))
            for query in (b"boom", b"bad", b"echo:udp"):
                await sock.send(query)
            with anyio.fail_after(TIMEOUT):
                assert await sock.receive() == b"re:udp"
        # TCP: garbage, a zero-length frame, a length prefix with nothing after it, half a
        # prefix, a frame cut short, a handler that raises, a reply of the wrong type, and
        # clients that leave before their answer.
        for payload in (
            rng.randbytes(3000),
            frame(b""),
            b"\xff\xff",
            b"\x00",
            frame(rng.randbytes(300))[:100],
            frame(b"boom"),
            frame(b"bad"),
            frame(b"slow:0.05:gone"),
            frame(b"echo:gone"),
        ):
            async with await anyio.connect_tcp(lst.host, lst.port) as stream:
                await stream.send(payload)
        assert await tcp_ask(lst, b"boom", b"bad", b"echo:tcp", replies=1) == [b"re:tcp"]
        assert await udp_ask(lst, b"echo:still") == [b"re:still"]
        assert lst.stats()["handler_errors"] == 6
        assert any(query == b"" for query, _, tcp in toy.calls if tcp)
        await anyio.sleep(0.1)  # the last deferred answer finds its client gone
    assert_balanced(lst)


# -- lifecycle -------------------------------------------------------------------------------


async def test_lifecycle_validation_and_repr() -> None:
    for kwargs, match in (
        ({"host": "localhost"}, "IP address"),
        ({"port": 65536}, "port"),
        ({"max_connections": 0}, "max_connections"),
        ({"max_in_flight": 0}, "max_in_flight"),
        ({"max_deferred": 0}, "max_deferred"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"idle_timeout": float("inf")}, "idle_timeout"),
    ):
        with pytest.raises(ValueError, match=match):
            DnsListener(Toy(), **kwargs)
    lst = DnsListener(Toy(), name="test")
    await lst.aclose()  # closing a listener that never started is harmless
    await lst.start()
    try:
        assert repr(lst).startswith(f"<DnsListener test {lst.address} serving")
        with pytest.raises(RuntimeError, match="already serving"):
            await lst.start()
        # The port is taken, for UDP and TCP alike.
        with pytest.raises(OSError, match="in use"):
            await DnsListener(Toy(), port=lst.port).start()
    finally:
        await lst.aclose()
    await lst.aclose()
    assert "closed" in repr(lst)
    assert_balanced(lst)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_no_descriptor_or_task_leaks_with_work_in_flight() -> None:
    async with DnsListener(Toy()) as lst:  # warm up anything created once per event loop
        await udp_ask(lst, b"echo:warm")
        await tcp_ask(lst, b"echo:warm")
    fds, tasks = _open_fds(), len(anyio.get_running_tasks())
    listeners: list[DnsListener] = []
    for _ in range(20):
        async with DnsListener(Toy()) as lst:
            listeners.append(lst)
            # Leave work in flight: deferred UDP and TCP answers, an idle connection, a
            # connection with half a message.
            streams = [await anyio.connect_tcp(lst.host, lst.port) for _ in range(3)]
            await streams[0].send(frame(b"slow:5:tcp"))
            await streams[1].send(b"\x00")
            async with await anyio.create_connected_udp_socket(
                remote_host=lst.host, remote_port=lst.port
            ) as sock:
                await sock.send(b"slow:5:udp")
                await anyio.sleep(0.02)
        for stream in streams:
            await assert_closed_by_server(stream, TIMEOUT)
            await stream.aclose()
    await anyio.lowlevel.checkpoint()
    assert _open_fds() == fds
    assert len(anyio.get_running_tasks()) == tasks
    for lst in listeners:
        assert_balanced(lst)
        assert lst.stats()["connections_opened"] == 3
