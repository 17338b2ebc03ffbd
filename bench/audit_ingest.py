"""What one audit entry costs SQLite to take, by index and commit size (issue 18).

The journal's ingest task appends entries to `audit_log` in large transactions. This measures
that append alone, with Python's `sqlite3` on a file in the server's own schema (the table and
its indexes are copied from a database `keyhold serve` created), in WAL mode with
`synchronous=FULL` as the server opens it: microseconds per entry over the log's growth, with
the entries' resources spread over `--keys` keys (each entry then touches its key's page of the
resource index), for a chosen set of indexes and WAL checkpoint threshold. Python's own share
(building the rows, `executemany`) is the `--indexes none` figure.

    python3 bench/audit_ingest.py --binary target/release/keyhold --rows 1200000 --keys 5000
    python3 bench/audit_ingest.py --binary target/release/keyhold --indexes all-but-resource
    python3 bench/audit_ingest.py --binary target/release/keyhold --checkpoint-pages 1000
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

RESOURCE_INDEX = "audit_by_resource"
ENTRY = ('{"time":"2026-12-04T21:25:55.815425072Z","project":"bench","principal":"user:owner@keyhold.local",'
         '"service":"cloudkms.googleapis.com","method":"Encrypt","resource":"%s","kind":"data_access",'
         '"permission":"cloudkms.cryptoKeyVersions.useToEncrypt","granted":true,"keyVersion":"%s/cryptoKeyVersions/1",'
         '"requestId":"4385ad46-e0205","code":0,"accessJustification":{"reason":"CUSTOMER_INITIATED_ACCESS",'
         '"policyEnforced":false,"allowed":true}}')


def server_schema(binary: Path) -> tuple[str, dict[str, str]]:
    """`audit_log`'s CREATE TABLE and its indexes' CREATE INDEX, by name, from a fresh server."""
    from suite import Server

    with tempfile.TemporaryDirectory(prefix="keyhold-ingest-") as d:
        with Server(binary, data=Path(d)):
            pass
        db = sqlite3.connect(Path(d) / "keyhold.db")
        rows = db.execute("SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'audit_log' AND sql IS NOT NULL")
        table, indexes = None, {}
        for kind, name, sql in rows:
            if kind == "table":
                table = sql
            elif kind == "index":
                indexes[name] = sql
        db.close()
    if table is None or RESOURCE_INDEX not in indexes:
        raise SystemExit(f"the server's database has no audit_log or no {RESOURCE_INDEX}")
    return table, indexes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(ROOT / "target/release/keyhold"))
    ap.add_argument("--rows", type=int, default=1_200_000)
    ap.add_argument("--keys", type=int, default=5_000, help="resources the entries are spread over")
    ap.add_argument("--batch", type=int, default=8_192, help="entries per transaction")
    ap.add_argument("--indexes", choices=["all", "none", "resource", "all-but-resource"], default="all")
    ap.add_argument("--checkpoint-pages", type=int, default=None,
                    help="PRAGMA wal_autocheckpoint (default: the server's, 16384)")
    ap.add_argument("--every", type=int, default=200_000, help="report every this many rows")
    ap.add_argument("--dir", default=None, help="where the database file goes (default: a temporary directory)")
    args = ap.parse_args()
    checkpoint = 16384 if args.checkpoint_pages is None else args.checkpoint_pages

    table, indexes = server_schema(Path(args.binary))
    keep = {"all": indexes, "none": {}, "resource": {RESOURCE_INDEX: indexes[RESOURCE_INDEX]},
            "all-but-resource": {k: v for k, v in indexes.items() if k != RESOURCE_INDEX}}[args.indexes]
    with tempfile.TemporaryDirectory(prefix="keyhold-ingest-", dir=args.dir) as d:
        path = Path(d) / "audit.db"
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute(f"PRAGMA wal_autocheckpoint = {checkpoint}")
        db.execute(table)
        for sql in keep.values():
            db.execute(sql)
        columns = "(seq, time_nanos, project, principal, method, resource, kind, entry, prev_hash, hash)"
        insert = f"INSERT INTO audit_log {columns} VALUES (?,?,?,?,?,?,?,?,?,?)"
        rng = random.Random(7)
        names = [f"projects/bench/locations/global/keyRings/r/cryptoKeys/k{i}" for i in range(args.keys)]
        entries = [ENTRY % (n, n) for n in names]
        chain = "0" * 64
        seq, nanos = 0, 1_780_000_000_000_000_000
        print(f"indexes: {args.indexes} ({', '.join(sorted(keep)) or 'none'}); {args.keys:,} keys; "
              f"{args.batch:,} entries a commit; checkpoint at {checkpoint} pages; {path}")
        t0 = last_t = time.perf_counter()
        last_seq = 0
        while seq < args.rows:
            rows = []
            for _ in range(args.batch):
                seq += 1
                nanos += 30_000
                k = rng.randrange(args.keys)
                rows.append((seq, nanos, "bench", "user:owner@keyhold.local", "Encrypt", names[k], "data_access",
                             entries[k], chain, chain))
            db.execute("BEGIN")
            db.executemany(insert, rows)
            db.execute("COMMIT")
            if seq // args.every != (seq - args.batch) // args.every:
                now = time.perf_counter()
                print(f"  log at {seq:>10,} entries: {(now - last_t) * 1e6 / (seq - last_seq):6.1f} µs an entry",
                      flush=True)
                last_t, last_seq = now, seq
        total = time.perf_counter() - t0
        count = db.execute("SELECT count(*) FROM audit_log").fetchone()[0]
        assert count == seq, f"{count} rows in the log, {seq} appended"
        wal = path.with_name(path.name + "-wal")
        size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        print(f"all {seq:,} entries (whole batches): {total * 1e6 / seq:.1f} µs an entry; "
              f"file and WAL {size / seq:.0f} bytes an entry")
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
