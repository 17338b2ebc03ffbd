"""What one audit entry costs SQLite to take, by index and commit size (issue 18).

The journal's ingest task appends entries to `audit_log` in large transactions. This measures
that append alone, with Python's `sqlite3` on a file in the server's own schema (the table, its
indexes and the resource index's table are copied from a database `keyhold serve` created), in
WAL mode with `synchronous=FULL` as the server opens it: microseconds per entry over the log's
growth, with the entries' resources spread over `--keys` keys, for a chosen set of indexes and
WAL checkpoint threshold.

- `--indexes server` (the default): the server's indexes, and the resource index filled behind
  the log as the server fills it (`crates/keyhold-sql/src/audit_index.rs`): every `--window`
  entries, read back through `audit_tail`, sorted by resource and inserted 16,384 to a
  transaction. The fills' time is in the figures.
- `--indexes inline-resource`: the indexes before (e750cca): the server's but `audit_tail`, and
  instead of the fills the resource index that every append kept, each entry touching its own
  key's page of it.
- `--indexes none`: Python's own share (building the rows, `executemany`).

    python3 bench/audit_ingest.py --binary target/release/keyhold --rows 1200000 --keys 5000
    python3 bench/audit_ingest.py --binary target/release/keyhold --indexes inline-resource
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

# The resource index as every append kept it before it was filled behind the log.
INLINE_RESOURCE_INDEX = "CREATE INDEX audit_by_resource ON audit_log (kind, resource, time_nanos, seq)"
# What the server's fill does (crates/keyhold-sql/src/audit_index.rs).
WINDOW_ROWS = ("SELECT kind, resource, time_nanos, seq FROM audit_log INDEXED BY audit_tail "
               "WHERE seq > ? AND seq <= ?")
INSERT_RESOURCE = ("INSERT INTO audit_resources (kind, resource, time_nanos, seq) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT DO NOTHING")
ROWS_PER_TRANSACTION = 16_384
ENTRY = ('{"time":"2026-12-04T21:25:55.815425072Z","project":"bench","principal":"user:owner@keyhold.local",'
         '"service":"cloudkms.googleapis.com","method":"Encrypt","resource":"%s","kind":"data_access",'
         '"permission":"cloudkms.cryptoKeyVersions.useToEncrypt","granted":true,"keyVersion":"%s/cryptoKeyVersions/1",'
         '"requestId":"4385ad46-e0205","code":0,"accessJustification":{"reason":"CUSTOMER_INITIATED_ACCESS",'
         '"policyEnforced":false,"allowed":true}}')


def server_schema(binary: Path) -> tuple[list[str], dict[str, str]]:
    """The CREATE TABLE of `audit_log`, `audit_resources` and `audit_resources_mark`, and
    `audit_log`'s indexes' CREATE INDEX by name, from a fresh server."""
    from suite import Server

    names = ("audit_log", "audit_resources", "audit_resources_mark")
    with tempfile.TemporaryDirectory(prefix="keyhold-ingest-") as d:
        with Server(binary, data=Path(d)):
            pass
        db = sqlite3.connect(Path(d) / "keyhold.db")
        rows = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
                          f"AND tbl_name IN {names}").fetchall()
        db.close()
    tables = {name: sql for kind, name, _, sql in rows if kind == "table"}
    indexes = {name: sql for kind, name, table, sql in rows if kind == "index" and table == "audit_log"}
    if set(tables) != set(names) or "audit_tail" not in indexes:
        raise SystemExit("the server's database has no audit_log, audit_resources or audit_tail: another schema?")
    return [tables[n] for n in names], indexes


def fill_window(db: sqlite3.Connection, mark: int, through: int) -> None:
    """Adds entries `mark < seq <= through` to the resource index as the server does."""
    rows = sorted(db.execute(WINDOW_ROWS, (mark, through)).fetchall())
    for i in range(0, max(len(rows), 1), ROWS_PER_TRANSACTION):
        db.execute("BEGIN")
        db.executemany(INSERT_RESOURCE, rows[i:i + ROWS_PER_TRANSACTION])
        if i + ROWS_PER_TRANSACTION >= len(rows):
            db.execute("UPDATE audit_resources_mark SET indexed_through = ? WHERE id = 1", (through,))
        db.execute("COMMIT")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(ROOT / "target/release/keyhold"))
    ap.add_argument("--rows", type=int, default=1_200_000)
    ap.add_argument("--keys", type=int, default=5_000, help="resources the entries are spread over")
    ap.add_argument("--batch", type=int, default=8_192, help="entries per transaction")
    ap.add_argument("--indexes", choices=["server", "inline-resource", "none"], default="server")
    ap.add_argument("--window", type=int, default=131_072,
                    help="entries the resource index is filled with at a time (the server's: 131072)")
    ap.add_argument("--checkpoint-pages", type=int, default=None,
                    help="PRAGMA wal_autocheckpoint (default: the server's, 16384)")
    ap.add_argument("--every", type=int, default=200_000, help="report every this many rows")
    ap.add_argument("--dir", default=None, help="where the database file goes (default: a temporary directory)")
    args = ap.parse_args()
    checkpoint = 16384 if args.checkpoint_pages is None else args.checkpoint_pages

    tables, indexes = server_schema(Path(args.binary))
    keep = {} if args.indexes == "none" else dict(indexes)
    if args.indexes == "inline-resource":
        keep.pop("audit_tail")
        keep["audit_by_resource"] = INLINE_RESOURCE_INDEX
    fills = args.indexes == "server"
    with tempfile.TemporaryDirectory(prefix="keyhold-ingest-", dir=args.dir) as d:
        path = Path(d) / "audit.db"
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute(f"PRAGMA wal_autocheckpoint = {checkpoint}")
        for sql in tables:
            db.execute(sql)
        db.execute("INSERT INTO audit_resources_mark (id, indexed_through) VALUES (1, 0)")
        for sql in keep.values():
            db.execute(sql)
        columns = "(seq, time_nanos, project, principal, method, resource, kind, entry, prev_hash, hash)"
        insert = f"INSERT INTO audit_log {columns} VALUES (?,?,?,?,?,?,?,?,?,?)"
        rng = random.Random(7)
        names = [f"projects/bench/locations/global/keyRings/r/cryptoKeys/k{i}" for i in range(args.keys)]
        entries = [ENTRY % (n, n) for n in names]
        chain = "0" * 64
        seq, nanos, mark = 0, 1_780_000_000_000_000_000, 0
        fill_note = f"resource index filled every {args.window:,} entries" if fills else "no fills"
        print(f"indexes: {args.indexes} ({', '.join(sorted(keep)) or 'none'}; {fill_note}); {args.keys:,} keys; "
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
            while fills and seq - mark >= args.window:
                fill_window(db, mark, mark + args.window)
                mark += args.window
            if seq // args.every != (seq - args.batch) // args.every:
                now = time.perf_counter()
                print(f"  log at {seq:>10,} entries: {(now - last_t) * 1e6 / (seq - last_seq):6.1f} µs an entry",
                      flush=True)
                last_t, last_seq = now, seq
        total = time.perf_counter() - t0
        count = db.execute("SELECT count(*) FROM audit_log").fetchone()[0]
        assert count == seq, f"{count} rows in the log, {seq} appended"
        if fills:
            indexed = db.execute("SELECT count(*) FROM audit_resources").fetchone()[0]
            assert indexed == mark, f"{indexed} rows in the resource index, {mark} filled"
        wal = path.with_name(path.name + "-wal")
        size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        print(f"all {seq:,} entries (whole batches): {total * 1e6 / seq:.1f} µs an entry; "
              f"file and WAL {size / seq:.0f} bytes an entry")
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
