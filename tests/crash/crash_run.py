#!/usr/bin/env python3
"""Crash test (issue 15): N rounds of `kill -9` of a real `keyhold serve` under mixed load.

Each round starts the server on its data (SQLite in a directory, or a PostgreSQL database),
runs ~32 threads of mixed requests over loopback (create keys, create versions, encrypt, set
IAM policies, upload objects), kills the server with SIGKILL at a random moment while they run,
and then, after a restart, checks everything acknowledged in any round so far:

- every acknowledged key ring, key and version exists;
- every acknowledged ciphertext decrypts to its plaintext;
- every key's IAM policy is the last one acknowledged (or the one in flight at the kill);
- every acknowledged object reads back byte-exact, and no object is torn: one whose upload was
  never acknowledged is absent or complete (contents are derived from the name, so a present
  object is checked whole);
- `keyhold audit verify` finds the audit chain intact.

Python 3 standard library only (threads + http.client); loopback only. The server listens on
port 0 and the bound address is read from its log (no port is picked and released). Prints
the acknowledged operations per kind and the number lost; exits 1 if anything is lost, torn,
or the audit chain is broken.

Usage (scripts/crash-test.sh wraps this):
    crash_run.py --binary target/debug/keyhold --rounds 3 [--database postgres://...]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PROJECT = "crash"
LOCATION = "global"
PARENT = f"projects/{PROJECT}/locations/{LOCATION}"
INSTANCE = f"{PARENT}/instances/crash"
KINDS = ("keyrings", "keys", "versions", "ciphertexts", "policies", "objects")


def object_bytes(name: str) -> bytes:
    """The contents of object `name`, derived from the name alone, so that a present object
    can be checked whole even when its upload was never acknowledged. One in five spans several
    1 MiB chunks."""
    h = hashlib.sha256(name.encode()).digest()
    if h[0] % 5 == 0:
        size = (1 << 20) + int.from_bytes(h[1:4], "big") % (3 << 19)
    else:
        size = 1 + int.from_bytes(h[1:4], "big") % (64 << 10)
    block = hashlib.sha256(h).digest() * 64  # 2 KiB
    return (block * (size // len(block) + 1))[:size]


class Server:
    """A `keyhold serve` child on port 0; its address is read from its log."""

    def __init__(self, binary: str, data_dir: Path, database: str | None, root_key: Path | None, log: Path,
                 audit_sync: str = "strict"):
        self.binary, self.data_dir, self.database, self.root_key, self.log_path = (
            binary,
            data_dir,
            database,
            root_key,
            log,
        )
        self.audit_sync = audit_sync
        self.proc: subprocess.Popen | None = None
        self.host = ""
        self.token = ""

    def start(self, timeout: float = 60.0) -> None:
        cmd = [self.binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir)]
        cmd += ["--owner-token-file", str(self.data_dir / "owner.token")]
        if self.database:
            cmd += ["--database", self.database]
        if self.root_key:
            cmd += ["--root-key-file", str(self.root_key)]
        cmd += ["--audit-sync", self.audit_sync]
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEYHOLD_")}
        env.update({"NO_COLOR": "1", "KEYHOLD_LOG": "info"})
        start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        pattern = re.compile(rb"serving the Cloud KMS v1 API on http://(127\.0\.0\.1:\d+)")
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"keyhold exited with {self.proc.returncode}:\n{self.output(start)}")
            with open(self.log_path, "rb") as f:
                f.seek(start)
                m = pattern.search(f.read())
            if m:
                self.host = m.group(1).decode()
                self.token = (self.data_dir / "owner.token").read_text().strip()
                # The server logs its address once it listens; wait until it answers.
                while time.monotonic() < deadline:
                    try:
                        status, _ = Client(self).call("GET", "/healthz")
                        if status == 200:
                            return
                    except OSError:
                        pass
                    time.sleep(0.05)
            time.sleep(0.05)
        raise RuntimeError(f"keyhold did not start within {timeout}s:\n{self.output(start)}")

    def output(self, start: int = 0) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")[-4000:]

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Client:
    """One keep-alive connection; raises OSError / http.client errors when the server dies."""

    def __init__(self, server: Server):
        self.server = server
        self.conn = http.client.HTTPConnection(server.host, timeout=60)

    def call(self, method: str, path: str, body: bytes | dict | None = None, ctype: str = "application/json",
             extra: dict | None = None):
        headers = {"Authorization": f"Bearer {self.server.token}", **(extra or {})}
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        if body is not None:
            headers["Content-Type"] = ctype
        self.conn.request(method, path, body=body, headers=headers)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, data

    def json(self, method: str, path: str, body=None, extra: dict | None = None):
        status, data = self.call(method, path, body, extra=extra)
        try:
            return status, json.loads(data) if data else {}
        except ValueError:
            return status, {"raw": data[:200].decode(errors="replace")}

    def close(self) -> None:
        self.conn.close()


class Ledger:
    """What was acknowledged, and what was in flight when the server died (shared, locked)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.keyrings: set[str] = set()
        self.keys: set[str] = set()
        self.versions: set[str] = set()
        self.ciphertexts: list[tuple[str, str, bytes]] = []  # key, ciphertext b64, plaintext
        self.policies: dict[str, list[str]] = {}  # key -> acknowledged members
        self.pending_policies: dict[str, list[str]] = {}  # key -> members in flight at the kill
        self.objects: set[str] = set()
        self.attempted_objects: set[str] = set()
        self.durable_objects: set[str] = set()  # unacknowledged, but found complete after a restart
        self.refused: dict[str, int] = {}  # "kind status" -> count (answered, not acknowledged)
        self.encrypt_ids: set[str] = set()  # request IDs of acknowledged encrypts: each must be audited


def worker(server: Server, ledger: Ledger, rnd: int, idx: int, stop: threading.Event, acked: dict) -> None:
    rng = random.Random(f"{rnd}-{idx}-{time.time_ns()}")
    ring = f"{PARENT}/keyRings/r{rnd}-w{idx}"
    my_keys: list[str] = []
    n = 0
    client = Client(server)

    def ack(kind: str) -> None:
        acked[kind] = acked.get(kind, 0) + 1

    def refused(kind: str, status: int) -> None:
        with ledger.lock:
            k = f"{kind} {status}"
            ledger.refused[k] = ledger.refused.get(k, 0) + 1

    try:
        status, _ = client.json("POST", f"/v1/{PARENT}/keyRings?keyRingId=r{rnd}-w{idx}", {})
        if status != 200:
            return refused("keyring", status)
        with ledger.lock:
            ledger.keyrings.add(ring)
        ack("keyrings")
        while not stop.is_set():
            n += 1
            op = rng.random()
            if not my_keys or op < 0.10:
                key = f"{ring}/cryptoKeys/k{n}"
                status, _ = client.json(
                    "POST", f"/v1/{ring}/cryptoKeys?cryptoKeyId=k{n}", {"purpose": "ENCRYPT_DECRYPT"}
                )
                if status != 200:
                    refused("key", status)
                    continue
                with ledger.lock:
                    ledger.keys.add(key)
                my_keys.append(key)
                ack("keys")
            elif op < 0.25:
                key = rng.choice(my_keys)
                status, body = client.json("POST", f"/v1/{key}/cryptoKeyVersions", {})
                if status != 200:
                    refused("version", status)
                    continue
                with ledger.lock:
                    ledger.versions.add(body["name"])
                ack("versions")
            elif op < 0.60:
                key = rng.choice(my_keys)
                plaintext = rng.randbytes(rng.randint(0, 2048))
                rid = f"crash-{rnd}-{idx}-{n}"
                status, body = client.json(
                    "POST",
                    f"/v1/{key}:encrypt",
                    {"plaintext": base64.b64encode(plaintext).decode()},
                    extra={"x-request-id": rid},
                )
                if status != 200:
                    refused("encrypt", status)
                    continue
                with ledger.lock:
                    ledger.ciphertexts.append((key, body["ciphertext"], plaintext))
                    ledger.encrypt_ids.add(rid)
                ack("ciphertexts")
            elif op < 0.75:
                key = rng.choice(my_keys)
                members = sorted({f"user:w{idx}-{rng.randint(0, 999)}@example.com" for _ in range(rng.randint(1, 3))})
                policy = {"bindings": [{"role": "roles/cloudkms.cryptoKeyEncrypterDecrypter", "members": members}]}
                with ledger.lock:
                    ledger.pending_policies[key] = members
                status, _ = client.json("POST", f"/v1/{key}:setIamPolicy", {"policy": policy})
                with ledger.lock:
                    ledger.pending_policies.pop(key, None)
                    if status == 200:
                        ledger.policies[key] = members
                if status != 200:
                    refused("policy", status)
                    continue
                ack("policies")
            else:
                name = f"r{rnd}-w{idx}-o{n}"
                with ledger.lock:
                    ledger.attempted_objects.add(name)
                status, _ = client.call(
                    "PUT", f"/v1/{INSTANCE}/objects/{name}", object_bytes(name), "application/octet-stream"
                )
                if status != 200:
                    refused("object", status)
                    continue
                with ledger.lock:
                    ledger.objects.add(name)
                ack("objects")
    except (OSError, http.client.HTTPException):
        # The server was killed: whatever was in flight is unacknowledged.
        pass
    finally:
        client.close()


def run_parallel(items, fn):
    """A shared list of problems and a thread body that applies fn(client, item) -> problem
    string or None to the items, one connection per thread."""
    problems: list[str] = []
    lock = threading.Lock()
    it = iter(list(items))

    def run(server):
        client = Client(server)
        try:
            while True:
                with lock:
                    item = next(it, None)
                if item is None:
                    return
                p = fn(client, item)
                if p:
                    with lock:
                        problems.append(p)
        finally:
            client.close()

    return problems, run


def verify(server: Server, ledger: Ledger) -> list[str]:
    """Every acknowledged operation is there and intact; no object is torn."""
    problems: list[str] = []

    def check(client: Client, item):
        kind, value = item
        if kind in ("keyring", "key", "version"):
            status, body = client.json("GET", f"/v1/{value}")
            if status != 200:
                return f"lost {kind} {value}: GET answered {status} {body}"
            if kind == "version" and body.get("state") != "ENABLED":
                return f"version {value} is {body.get('state')}"
        elif kind == "ciphertext":
            key, ct, pt = value
            status, body = client.json("POST", f"/v1/{key}:decrypt", {"ciphertext": ct})
            if status != 200:
                return f"lost ciphertext of {key}: decrypt answered {status} {body}"
            if base64.b64decode(body.get("plaintext", "")) != pt:
                return f"ciphertext of {key} decrypts to something else"
        elif kind == "policy":
            key, acked, pending = value
            status, body = client.json("GET", f"/v1/{key}:getIamPolicy")
            if status != 200:
                return f"policy of {key}: getIamPolicy answered {status}"
            members = sorted(m for b in body.get("bindings", []) for m in b.get("members", []))
            if members != acked and (pending is None or members != pending):
                return f"lost policy of {key}: has {members}, acknowledged {acked}"
            if members != acked:
                # The one in flight at the kill was committed: it is the policy from now on.
                with ledger.lock:
                    ledger.policies[key] = members
        elif kind == "object":
            name, was_acked = value
            status, data = client.call("GET", f"/v1/{INSTANCE}/objects/{name}?alt=media")
            if status == 404 and not was_acked:
                return None  # never acknowledged, absent: fine
            if status != 200:
                return f"{'lost' if was_acked else 'unreadable'} object {name}: {status} {data[:200]!r}"
            if data != object_bytes(name):
                what = "corrupt" if was_acked else "torn (unacknowledged but present and incomplete)"
                return f"{what} object {name}: {len(data)} bytes, expected {len(object_bytes(name))}"
            if not was_acked:
                # Committed before the kill though never acknowledged: it must stay from now on.
                with ledger.lock:
                    ledger.durable_objects.add(name)
        return None

    with ledger.lock:
        items = [("keyring", r) for r in ledger.keyrings]
        items += [("key", k) for k in ledger.keys]
        items += [("version", v) for v in ledger.versions]
        items += [("ciphertext", c) for c in ledger.ciphertexts]
        policy_keys = set(ledger.policies) | set(ledger.pending_policies)
        items += [("policy", (k, ledger.policies.get(k, []), ledger.pending_policies.get(k))) for k in policy_keys]
        items += [
            ("object", (o, o in ledger.objects or o in ledger.durable_objects)) for o in ledger.attempted_objects
        ]
        ledger.pending_policies.clear()
    problems, run = run_parallel(items, check)
    threads = [threading.Thread(target=run, args=(server,)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Objects listed by the store but never attempted would be a mix-up; listed ones that were
    # attempted are read above.
    client = Client(server)
    try:
        token = ""
        while True:
            status, body = client.json("GET", f"/v1/{INSTANCE}/objects?pageSize=1000&pageToken={token}")
            if status != 200:
                problems.append(f"listing objects answered {status} {body}")
                break
            for o in body.get("objects", []):
                short = o["name"].rsplit("/objects/", 1)[-1]
                if short not in ledger.attempted_objects:
                    problems.append(f"object {short} listed but never uploaded")
            token = body.get("nextPageToken", "")
            if not token:
                break
        # Every acknowledged encrypt has its audit entry (issue 18: whatever --audit-sync says,
        # a kill of the process loses none).
        audited: dict[str, int] = {}
        token = ""
        while True:
            status, body = client.json(
                "GET",
                f"/v1/projects/{PROJECT}/auditLogs?logName=data_access&methodName=Encrypt&pageSize=1000&pageToken={token}",
            )
            if status != 200:
                problems.append(f"reading the audit log answered {status} {body}")
                break
            for e in body.get("entries", []):
                rid = e["protoPayload"]["requestMetadata"]["requestAttributes"]["id"]
                audited[rid] = audited.get(rid, 0) + 1
            token = body.get("nextPageToken", "")
            if not token:
                break
        with ledger.lock:
            missing = sorted(ledger.encrypt_ids - audited.keys())
            twice = sorted(rid for rid in ledger.encrypt_ids if audited.get(rid, 0) > 1)
        if missing:
            problems.append(f"{len(missing)} acknowledged encrypts have no audit entry, e.g. {missing[:5]}")
        if twice:
            problems.append(f"{len(twice)} acknowledged encrypts have more than one audit entry, e.g. {twice[:5]}")
    finally:
        client.close()
    return problems


def audit_verify(binary: str, data_dir: Path, database: str | None) -> tuple[bool, str]:
    cmd = [binary, "audit", "verify"]
    cmd += ["--database", database] if database else ["--data-dir", str(data_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYHOLD_")}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--min-load", type=float, default=1.0, help="shortest load before the kill (s)")
    ap.add_argument("--max-load", type=float, default=4.0, help="longest load before the kill (s)")
    ap.add_argument("--database", help="PostgreSQL URL (a fresh database); default: SQLite in a temp dir")
    ap.add_argument("--label", default="")
    ap.add_argument("--audit-sync", default="strict",
                    help="keyhold serve --audit-sync (strict, or an interval: entries through the journal)")
    args = ap.parse_args()

    backend = "postgres" if args.database else "sqlite"
    label = args.label or (backend if args.audit_sync == "strict" else f"{backend}, --audit-sync {args.audit_sync}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="keyhold-crash-") as tmp:
        tmp = Path(tmp)
        data_dir = tmp / "data"
        data_dir.mkdir(mode=0o700)
        root_key = None
        if args.database:
            root_key = tmp / "root.key"
            root_key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
            root_key.chmod(0o600)
        server = Server(args.binary, data_dir, args.database, root_key, tmp / "server.log", args.audit_sync)
        ledger = Ledger()
        failures: list[str] = []

        server.start()
        c = Client(server)
        status, body = c.json("POST", f"/v1/{PARENT}/instances?instanceId=crash", {})
        c.close()
        if status != 200:
            print(f"[{label}] creating the store instance answered {status} {body}", file=sys.stderr)
            server.kill()
            return 1

        grand = {k: 0 for k in KINDS}  # acknowledged operations per kind, all rounds
        for rnd in range(1, args.rounds + 1):
            stop = threading.Event()
            acked: list[dict] = [{} for _ in range(args.concurrency)]
            threads = [
                threading.Thread(target=worker, args=(server, ledger, rnd, i, stop, acked[i]), daemon=True)
                for i in range(args.concurrency)
            ]
            for t in threads:
                t.start()
            load = random.uniform(args.min_load, args.max_load)
            time.sleep(load)
            server.kill()  # SIGKILL while the load runs
            stop.set()
            for t in threads:
                t.join(timeout=120)
            in_round = {k: sum(a.get(k, 0) for a in acked) for k in KINDS}
            for k in KINDS:
                grand[k] += in_round[k]

            server.start()
            problems = verify(server, ledger)
            ok, audit = audit_verify(args.binary, data_dir, args.database)
            if not ok:
                problems.append(f"audit verify failed: {audit}")
            print(
                f"[{label}] round {rnd}: killed after {load:.1f}s; acknowledged this round "
                + ", ".join(f"{k} {in_round[k]}" for k in KINDS)
                + f"; problems after restart: {len(problems)}; {audit.splitlines()[-1] if audit else ''}",
                flush=True,
            )
            for p in problems[:20]:
                print(f"  {p}", file=sys.stderr)
            failures += problems
        server.kill()

        totals = grand
        print(
            f"[{label}] {args.rounds} rounds of kill -9 in {time.monotonic() - started:.0f}s; acknowledged: "
            + ", ".join(f"{k} {totals[k]}" for k in KINDS)
            + f"; unacknowledged uploads checked for tearing: {len(ledger.attempted_objects - ledger.objects)}"
            + f"; lost or torn: {len(failures)}"
        )
        if args.audit_sync != "strict":
            # The restarts' replays of entries the killed process had journaled but not yet
            # moved into the log (each such entry was then checked like any other).
            replayed = [int(n) for n in re.findall(r"moved entries left by the previous run.*?entries=(\d+)", server.output())]
            print(f"[{label}] audit journal: {sum(replayed)} entries replayed at {len(replayed)} of {args.rounds} restarts")
        if ledger.refused:
            print(f"[{label}] answered but refused (not acknowledged): {dict(sorted(ledger.refused.items()))}")
        if failures:
            print(f"[{label}] FAILED: {len(failures)} problems; server log:\n{server.output()}", file=sys.stderr)
            return 1
        if sum(totals.values()) == 0:
            print(f"[{label}] FAILED: nothing was acknowledged", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
