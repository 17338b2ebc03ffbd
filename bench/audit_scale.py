"""Audit reads at scale (issue 18, finding 4): a log of N entries, then the reads an operator
makes, timed through `GET /v1/projects/P/auditLogs` on the running server.

The log is written straight into a stopped server's SQLite file, in the server's own layout
(columns, JSON of a real entry as template, the hash chain computed as the server does), because
appending 10 million entries through the API would take a quarter of an hour; then the server
is started on it, `keyhold audit verify` checks the chain, and each read is timed.

Shape of the log (deterministic): 100 projects, 100,000 keys (key i in project i mod 100),
1,000 principals, 95 % data-access entries (Encrypt 60 %, Decrypt 35 %) and 5 % activity
entries; one hot key receives a tenth of the data-access entries; 1 ms apart, every 97th
entry 40 ms late (another node's clock), so reads must follow time rather than chain order.

    python3 bench/audit_scale.py --binary target/release/keyhold --entries 10000000
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import json
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

PROJECTS = 100
KEYS = 100_000
PRINCIPALS = 1_000
BASE_NANOS = 1_780_000_000_000_000_000
STEP_NANOS = 1_000_000
LOCATION = "locations/global/keyRings/r/cryptoKeys"


def key_of(i: int) -> str:
    return f"projects/p{i % PROJECTS}/{LOCATION}/k{i}"


HOT_KEY = f"projects/p0/{LOCATION}/hot"


def rfc3339(nanos: int) -> str:
    secs, frac = divmod(nanos, 1_000_000_000)
    return datetime.fromtimestamp(secs, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def entry_fields(n: int) -> tuple:
    """The n-th entry (0-based): time, project, principal, method, resource, kind."""
    time_nanos = BASE_NANOS + n * STEP_NANOS + (40_000_000 if n % 97 == 0 else 0)
    x = (n * 0x9E3779B97F4A7C15) & 0xFFFF_FFFF_FFFF_FFFF  # Fibonacci hashing: independent draws
    principal = f"user:u{(x >> 8) % PRINCIPALS}@example.com"
    r = (x >> 24) % 100
    key = key_of((x >> 36) % KEYS)
    if r < 5:
        method, kind = ("UpdateCryptoKey" if r < 3 else "SetIamPolicy"), "activity"
    else:
        method, kind = ("Encrypt" if r < 65 else "Decrypt"), "data_access"
        key = HOT_KEY if n % 10 == 0 else key
    project = key.split("/")[1]
    return time_nanos, project, principal, method, key, kind


def template(data: Path) -> dict:
    """A real entry the server wrote (the newest data-access one)."""
    db = sqlite3.connect(data / "keyhold.db")
    try:
        row = db.execute("SELECT entry FROM audit_log WHERE kind = 'data_access' ORDER BY seq DESC LIMIT 1").fetchone()
    finally:
        db.close()
    if not row:
        raise RuntimeError("the server wrote no data-access entry to copy")
    return json.loads(row[0])


def fill(data: Path, entries: int, batch: int = 200_000) -> float:
    """Appends `entries` synthetic entries to the stopped server's chain; seconds taken."""
    shape = template(data)
    db = sqlite3.connect(data / "keyhold.db", isolation_level=None)
    t0 = time.perf_counter()
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = OFF")
        # Written without the read indexes, which the server builds when it opens the file (as
        # it does when an existing log meets a build that adds them), and without the resource
        # index's rows, which it adds in its open too (the log is then more than a window ahead
        # of that index): far quicker than keeping them in order row by row. `audit_tail` grows
        # at its right edge and stays.
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'audit_log' "
                                  "AND name LIKE 'audit_by_%'").fetchall():
            db.execute(f'DROP INDEX "{name}"')
        seq, prev = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        done = 0
        while done < entries:
            rows = []
            for n in range(done, min(entries, done + batch)):
                t, project, principal, method, resource, kind = entry_fields(n)
                e = dict(shape)
                e.update(time=rfc3339(t), project=project, principal=principal, method=method,
                         resource=resource, kind=kind, requestId=f"bench-{n}")
                e.pop("request_id", None)
                text = json.dumps(e, separators=(",", ":"))
                seq += 1
                h = hashlib.sha256(f"{prev}\n{seq}\n".encode() + text.encode()).hexdigest()
                rows.append((seq, t, project, principal, method, resource, kind, text, prev, h))
                prev = h
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO audit_log (seq, time_nanos, project, principal, method, resource, kind, entry, "
                "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev))
            db.execute("COMMIT")
            done += len(rows)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return time.perf_counter() - t0


def reads(entries: int) -> dict[str, tuple[str, str]]:
    """name -> (project, query string) of the timed reads."""
    mid = BASE_NANOS + (entries // 2) * STEP_NANOS
    # A key the log holds (about entries / 100,000 entries of it, like any but the hot one).
    cold_key = next(f[4] for f in map(entry_fields, range(entries // 3, entries)) if f[4] != HOT_KEY and f[5] == "data_access")
    q = lambda **kw: urllib.parse.urlencode(kw)  # noqa: E731
    return {
        "one key's history, newest first": (cold_key.split("/")[1], q(resourcePrefix=cold_key, logName="data_access", orderBy="timestamp desc", pageSize=100)),
        "hot key (10 % of the log), newest first": ("p0", q(resourcePrefix=HOT_KEY, logName="data_access", orderBy="timestamp desc", pageSize=100)),
        "one principal, newest first": ("-", q(principal="u7@example.com", logName="data_access", orderBy="timestamp desc", pageSize=100)),
        "one method in one project": ("p3", q(methodName="Decrypt", logName="data_access", pageSize=100)),
        "one minute in the middle": ("p5", q(startTime=rfc3339(mid), endTime=rfc3339(mid + 60_000_000_000), logName="data_access", pageSize=100)),
        "a project's entries (both logs), newest first": ("p9", q(orderBy="timestamp desc", pageSize=100)),
        "a project's activity, newest first": ("p9", q(logName="activity", orderBy="timestamp desc", pageSize=100)),
        "both logs of a project, oldest first": ("p9", q(pageSize=100)),
    }


def time_reads(s, entries: int, rounds: int) -> dict:
    """Each read `rounds` times (after one warm-up), and the second page of each."""
    out = {}
    for name, (project, query) in reads(entries).items():
        path = f"projects/{project}/auditLogs?{query}"
        first = s.ok("GET", path)
        if not first.get("entries"):
            raise RuntimeError(f"{name}: no entries")
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            s.ok("GET", path)
            times.append(time.perf_counter() - t0)
        row = {"median_ms": statistics.median(times) * 1e3, "max_ms": max(times) * 1e3,
               "entries": len(first["entries"])}
        token = first.get("nextPageToken")
        if token:
            t0 = time.perf_counter()
            second = s.ok("GET", path + "&" + urllib.parse.urlencode({"pageToken": token}))
            row["page2_ms"] = (time.perf_counter() - t0) * 1e3
            if second["entries"] and second["entries"][0] == first["entries"][-1]:
                raise RuntimeError(f"{name}: the second page repeats the first")
        out[name] = row
    return out


def run(binary: Path, entries: int, rounds: int, verify: bool = True, before: Path | None = None,
        before_rounds: int = 2, reuse: Path | None = None) -> dict:
    """Fills a log of `entries` (or reuses the data directory `reuse`, kept afterwards), times the
    reads on `before` (if given) and on `binary`, and verifies the chain."""
    from suite import Server, encryption_key  # noqa: E402  (bench/suite.py)

    if reuse:
        data, fill_s = reuse, 0.0
    else:
        with Server(binary) as s:
            key = encryption_key(s)
            s.ok("POST", f"{key}:encrypt", {"plaintext": "AAAA"})
            data = s.data
            s.own_dir = False
            s.stop()
        fill_s = fill(data, entries)
    size = (data / "keyhold.db").stat().st_size
    result = {"entries": entries, "fill_s": fill_s, "db_bytes": size}
    try:
        if before:
            # The build before this change, on the same file (it adds back its one index).
            t0 = time.perf_counter()
            with Server(before, data=data, start_timeout=1800) as s0:
                result["before_open_s"] = time.perf_counter() - t0
                result["before_reads"] = time_reads(s0, entries, before_rounds)
        t0 = time.perf_counter()
        with Server(binary, data=data, start_timeout=1800) as s2:
            result["open_s"] = time.perf_counter() - t0
            result["db_bytes_indexed"] = (data / "keyhold.db").stat().st_size
            result["reads"] = time_reads(s2, entries, rounds)
        if verify:
            t0 = time.perf_counter()
            out = subprocess.run([str(binary), "audit", "verify", "--data-dir", str(data)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"audit verify failed: {out.stdout} {out.stderr}")
            result["verify_s"] = time.perf_counter() - t0
        return result
    finally:
        if not reuse:
            shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", type=Path, default=ROOT / "target/release/keyhold")
    ap.add_argument("--entries", type=int, default=10_000_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--before", type=Path, help="an older build to time on the same log first")
    ap.add_argument("--reuse", type=Path, help="a data directory filled before (kept afterwards)")
    args = ap.parse_args()
    result = run(args.binary, args.entries, args.rounds, not args.no_verify, args.before, reuse=args.reuse)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
