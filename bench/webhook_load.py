"""A ServiceTrade-like sender of webhook deliveries, run as a process of its own against the receiver.

    python -m bench.webhook_load URL --rate 600 --seconds 20 [--connections 32] [--retry-delays 5,15]

Open loop: message k is due at k / rate seconds whatever the answers before it, so a slow receiver shows as
latency, not as a politely lower rate. Each message has a fresh messageId and 1-5 entities (jobs, job items,
invoices, locations, and some types the receiver filters out). Latency is measured from the moment a message was
due to its answer, so time spent waiting for a free connection counts. A 5xx or no answer is delivered again after
the retry delays, 3 attempts in all, as ServiceTrade does; then the message is given up (lost). Prints one JSON
object: sent, answered by status, given up, achieved rate and latency percentiles (first attempts only).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
import uuid
from urllib.parse import urlsplit

TYPES = ("job", "jobitem", "invoice", "location", "appointment", "contact")


def message(rng: random.Random, n: int) -> bytes:
    entities = [{"action": rng.choice(("created", "updated", "updated", "deleted")), "timestamp": 1_767_225_600 + n,
                 "userId": 1, "entity": {"type": rng.choice(TYPES), "id": rng.randrange(1, 50_000)}}
                for _ in range(rng.randrange(1, 6))]
    return json.dumps({"messageId": str(uuid.UUID(int=rng.getrandbits(128))), "timestamp": str(1_767_225_600 + n),
                       "data": entities}).encode()


class Connection:
    """One keep-alive HTTP/1.1 connection; a request at a time."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def post(self, path: str, body: bytes, timeout: float) -> int | None:
        try:
            return await asyncio.wait_for(self._post(path, body), timeout)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            return None

    async def _post(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await self.writer.drain()
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length, closing = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                closing = True
        await self.reader.readexactly(length)
        if closing:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run(url: str, rate: float, seconds: float, connections: int, retry_delays: list[float],
              timeout: float) -> dict:
    parts = urlsplit(url)
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection(parts.hostname, parts.port or 80))
    rng = random.Random(14)
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    given_up: list[str] = []
    retried = 0
    total = int(rate * seconds)

    async def send(body: bytes, due: float) -> None:
        nonlocal retried
        for attempt in range(3):
            if attempt:
                retried += 1
                await asyncio.sleep(retry_delays[attempt - 1])
                due = time.monotonic()
            connection = await pool.get()
            try:
                status = await connection.post(parts.path, body, timeout)
            finally:
                pool.put_nowait(connection)
            key = str(status) if status is not None else "no answer"
            statuses[key] = statuses.get(key, 0) + 1
            if attempt == 0:
                latencies.append(time.monotonic() - due)
            if status is not None and status < 500:
                return
        given_up.append(json.loads(body)["messageId"])

    started = time.monotonic()
    tasks = []
    for n in range(total):
        due = started + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(message(rng, n), due)))
    sending = time.monotonic() - started
    await asyncio.gather(*tasks)
    latencies.sort()

    def percentile(p: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 1) if latencies else 0.0

    return {"sent": total, "answers": statuses, "retried": retried, "given_up": len(given_up),
            "given_up_ids": given_up[:20], "rate_target": rate, "rate_achieved": round(total / sending, 1),
            "wall_seconds": round(time.monotonic() - started, 1), "p50_ms": percentile(0.50),
            "p99_ms": percentile(0.99), "max_ms": round(1000 * latencies[-1], 1) if latencies else 0.0}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, default=600)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--retry-delays", default="5,15")
    parser.add_argument("--timeout", type=float, default=5.0, help="ServiceTrade waits 5 s for an answer")
    args = parser.parse_args(argv)
    delays = [float(d) for d in args.retry_delays.split(",")]
    print(json.dumps(asyncio.run(run(args.url, args.rate, args.seconds, args.connections, delays, args.timeout))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
