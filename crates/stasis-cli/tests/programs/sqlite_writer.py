"""sqlite_writer.py - a SQLite writer holding its lock across checkpoint/restore (Stasis test
program; the workload protocol of workloads/common.h).

Run as `python3 sqlite_writer.py CTL_DIR [wal]`: creates CTL_DIR/db.sqlite (rollback journal,
or write-ahead log with `wal`: then the database's -shm index is mapped shared) with
100 committed rows, then opens `BEGIN EXCLUSIVE` and inserts 50 more rows without committing:
SQLite holds POSIX record locks on the database file (the EXCLUSIVE lock) and the hot journal
exists. Then writes CTL_DIR/ready and waits for CTL_DIR/verify.

While it waits another process must be refused the database ("database is locked"), before
and after any restore. On verify: the uncommitted rows are still visible to this connection
(150), the transaction commits, and the result is PASS or FAIL.
"""
import os
import sqlite3
import sys
import time

CTL = os.path.abspath(sys.argv[1])
os.chdir(CTL)
T0 = time.monotonic()


def write_atomic(name, text):
    tmp = "%s.tmp.%d" % (name, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, name)


def report(ok, msg):
    write_atomic("result", "PASS\n" if ok else "FAIL: %s\n" % msg)
    sys.exit(0 if ok else 1)


db = sqlite3.connect("db.sqlite", isolation_level=None, timeout=0)
MODE = "WAL" if sys.argv[2:] == ["wal"] else "DELETE"
got = db.execute("PRAGMA journal_mode=%s" % MODE).fetchone()[0]
if got.upper() != MODE:
    report(False, "journal_mode %s: got %s" % (MODE, got))
db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
db.executemany("INSERT INTO t VALUES (?, ?)", [(i, "row%d" % i) for i in range(100)])
db.execute("BEGIN EXCLUSIVE")
db.executemany("INSERT INTO t VALUES (?, ?)", [(i, "row%d" % i) for i in range(100, 150)])
write_atomic("ready", "%d\n" % os.getpid())
while not os.path.exists("verify"):
    if time.monotonic() - T0 > 300:
        report(False, "no verify request within 300 s")
    time.sleep(0.01)
try:
    n = db.execute("SELECT count(*) FROM t").fetchone()[0]
    if n != 150:
        report(False, "the writer sees %d rows, expected 150 (100 committed + 50 pending)" % n)
    db.execute("COMMIT")
except sqlite3.Error as e:
    report(False, "after restore: %s" % e)
report(True, "")
