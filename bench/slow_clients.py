#!/usr/bin/env python3
"""What a normal client sees while idle and slow clients are held (issue 15, finding 3).

Starts `keyhold serve` (port 0; the address is read from its log) with a SOFTWARE key, then
measures one normal client, first on the idle server and then, in the same run, while
IDLE connections that send nothing and SLOW clients that send their request head one byte
per second are held. The held clients reconnect as soon as the server closes them (idle and
header timeouts, eviction at the connection cap), so the pressure lasts the whole phase.

The normal client makes, one after the other:
  healthz    GET /healthz on one keep-alive connection
  healthz-nc GET /healthz on a new connection each time (what the connection cap affects)
  encrypt    POST :encrypt (32 bytes) on one keep-alive connection
and the script prints p50 / p99 / max per kind and phase. Standard library only; run it
through bench/slow-clients.sh, which raises `ulimit -n` and builds the release binary.
"""

import argparse
import asyncio
import base64
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time


def percentile(values, p):
    s = sorted(values)
    return s[max(0, math.ceil(p * len(s)) - 1)]


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    body = await reader.readexactly(int(m.group(1))) if m else b""
    return status, body


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, addr):
        self.addr = addr
        self.reader = self.writer = None

    async def request(self, raw):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(*self.addr)
        self.writer.write(raw)
        await self.writer.drain()
        return await read_response(self.reader)

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def request(method, path, token=None, body=b"", close=False):
    lines = [f"{method} {path} HTTP/1.1", "Host: keyhold"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def measure(addr, token, enc_path, n_health, n_enc):
    """The normal client's latencies (seconds) per kind."""
    out = {"healthz": [], "healthz-nc": [], "encrypt": []}
    c = Client(addr)
    hz = request("GET", "/healthz")
    for _ in range(n_health):
        t = time.perf_counter()
        status, _ = await c.request(hz)
        out["healthz"].append(time.perf_counter() - t)
        assert status == 200, status
    c.close()
    hz_close = request("GET", "/healthz", close=True)
    for _ in range(max(1, n_health // 10)):
        t = time.perf_counter()
        nc = Client(addr)
        status, _ = await nc.request(hz_close)
        out["healthz-nc"].append(time.perf_counter() - t)
        nc.close()
        assert status == 200, status
    body = json.dumps({"plaintext": base64.b64encode(os.urandom(32)).decode()}).encode()
    enc = request("POST", enc_path, token, body)
    c = Client(addr)
    for _ in range(n_enc):
        t = time.perf_counter()
        status, resp = await c.request(enc)
        out["encrypt"].append(time.perf_counter() - t)
        assert status == 200, (status, resp)
    c.close()
    return out


class Pressure:
    """IDLE silent connections and SLOW one-byte-a-second clients, each reconnecting when cut."""

    def __init__(self, addr, idle, slow):
        self.addr, self.n_idle, self.n_slow = addr, idle, slow
        self.open = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.stop = asyncio.Event()
        self.tasks = []

    async def _hold(self, slow):
        head = b"GET /healthz HTTP/1.1\r\nHost: keyhold\r\nX-Slow: " + b"a" * 10_000
        first = True
        while not self.stop.is_set():
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.addr), 10)
            except (OSError, asyncio.TimeoutError):
                self.connect_failures += 1
                await asyncio.sleep(0.5)
                continue
            if not first:
                self.reconnects += 1
            first = False
            self.open += 1
            try:
                if slow:
                    for b in head:
                        writer.write(bytes([b]))
                        await writer.drain()
                        if reader.at_eof():
                            break
                        try:
                            await asyncio.wait_for(asyncio.shield(self.stop.wait()), 1.0)
                            break
                        except asyncio.TimeoutError:
                            pass
                else:
                    stop = asyncio.ensure_future(self.stop.wait())
                    read = asyncio.ensure_future(reader.read(1))
                    await asyncio.wait({stop, read}, return_when=asyncio.FIRST_COMPLETED)
                    read.cancel()
                    stop.cancel()
            except OSError:
                pass
            finally:
                self.open -= 1
                writer.close()

    async def start(self, timeout=60):
        for i in range(self.n_idle + self.n_slow):
            self.tasks.append(asyncio.ensure_future(self._hold(slow=i >= self.n_idle)))
            if i % 100 == 99:
                await asyncio.sleep(0.01)
        deadline = time.monotonic() + timeout
        while self.open < self.n_idle + self.n_slow and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.open

    async def end(self):
        self.stop.set()
        await asyncio.wait(self.tasks, timeout=15)


def start_server(bin_path, data, extra):
    log = open(os.path.join(data, "serve.log"), "w+")
    env = dict(os.environ, KEYHOLD_LOG="info")
    proc = subprocess.Popen(
        [bin_path, "serve", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(data, "d")] + extra,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log.seek(0)
        m = re.search(r"serving .* on http://([\d.]+):(\d+)", log.read())
        if m:
            return proc, (m.group(1), int(m.group(2)))
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    log.seek(0)
    sys.exit("the server did not start:\n" + log.read())


async def setup_key(addr, token):
    c = Client(addr)
    rings = "/v1/projects/bench/locations/global/keyRings"
    for raw in (
        request("POST", f"{rings}?keyRingId=r", token, b"{}"),
        request("POST", f"{rings}/r/cryptoKeys?cryptoKeyId=k", token, b'{"purpose":"ENCRYPT_DECRYPT"}'),
    ):
        status, body = await c.request(raw)
        assert status == 200, body
    c.close()
    return f"{rings}/r/cryptoKeys/k:encrypt"


def summary(label, lat):
    rows = []
    for kind, v in lat.items():
        rows.append(
            f"| {label} | {kind} | {len(v)} | {percentile(v, 0.5) * 1e3:.2f} ms | "
            f"{percentile(v, 0.99) * 1e3:.2f} ms | {max(v) * 1e3:.2f} ms |"
        )
    return rows


async def pressure_only(addr, idle, slow):
    """The --pressure child: holds the clients, reports a JSON line a second, never returns."""
    p = Pressure(addr, idle, slow)
    asyncio.ensure_future(p.start())
    while True:
        print(json.dumps({"open": p.open, "reconnects": p.reconnects, "failures": p.connect_failures}), flush=True)
        await asyncio.sleep(1)


class PressureProcess:
    """The held clients in a child process, so that their event loop does not slow the
    measured client's."""

    def __init__(self, addr, idle, slow):
        self.args = [sys.executable, os.path.abspath(__file__), "--pressure", f"{addr[0]}:{addr[1]}",
                     "--idle", str(idle), "--slow", str(slow)]
        self.status = {"open": 0, "reconnects": 0, "failures": 0}

    async def start(self, want, timeout=60):
        self.proc = await asyncio.create_subprocess_exec(*self.args, stdout=asyncio.subprocess.PIPE)
        self.reader = asyncio.ensure_future(self._read())
        deadline = time.monotonic() + timeout
        while self.status["open"] < want and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return self.status["open"]

    async def _read(self):
        async for line in self.proc.stdout:
            self.status = json.loads(line)

    async def end(self):
        self.proc.kill()
        await self.proc.wait()
        self.reader.cancel()


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/keyhold")
    ap.add_argument("--idle", type=int, default=2000, help="idle connections held")
    ap.add_argument("--slow", type=int, default=200, help="slow clients held (a header byte a second)")
    ap.add_argument("--requests", type=int, default=2000, help="healthz requests per phase (encrypt: a quarter)")
    ap.add_argument("--settle", type=float, default=3.0, help="seconds under pressure before measuring")
    ap.add_argument("--pressure", metavar="HOST:PORT", help=argparse.SUPPRESS)
    ap.add_argument("serve_args", nargs="*", help="extra `keyhold serve` flags (after --)")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.idle + a.slow + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))
    if a.pressure:
        host, port = a.pressure.rsplit(":", 1)
        await pressure_only((host, int(port)), a.idle, a.slow)
        return
    data = tempfile.mkdtemp(prefix="keyhold-slow-")
    proc, addr = start_server(a.bin, data, a.serve_args)
    try:
        with open(os.path.join(data, "d", "owner.token")) as f:
            token = f.read().strip()
        enc = await setup_key(addr, token)
        n_enc = max(1, a.requests // 4)
        await measure(addr, token, enc, 200, 50)  # warm-up
        idle = await measure(addr, token, enc, a.requests, n_enc)
        pressure = PressureProcess(addr, a.idle, a.slow)
        held = await pressure.start(a.idle + a.slow)
        await asyncio.sleep(a.settle)
        loaded = await measure(addr, token, enc, a.requests, n_enc)
        st = pressure.status
        await pressure.end()
        alive = proc.poll() is None
        print(f"server: {a.bin} serve {' '.join(a.serve_args)} on {addr[0]}:{addr[1]}; ulimit -n "
              f"{resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")
        print(f"pressure: {a.idle} idle + {a.slow} slow clients; {held} held when measuring began, "
              f"{st['open']} at its end; {st['reconnects']} reconnects after the server cut one, "
              f"{st['failures']} failed connects; server alive: {alive}")
        print()
        print("| server | request | n | p50 | p99 | max |")
        print("|---|---|---|---|---|---|")
        for row in summary("idle", idle) + summary(f"{a.idle} idle + {a.slow} slow held", loaded):
            print(row)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
