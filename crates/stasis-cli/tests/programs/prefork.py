"""prefork.py - a pre-fork server in CPython: data loaded once, then worker processes forked.

Run as `python3 prefork.py CTL_DIR SIZE_MIB WORKERS`; follows the workload protocol of
workloads/common.h (ready → verify → result). The parent builds SIZE_MIB MiB of data (a
bytearray with a seeded pattern, and a dict of 50k entries), records its digest, forks WORKERS
children that only read it (each loops computing a checksum of a slice), then waits. At verify
every worker checks the whole digest and its dict and exits 0/1; the parent checks its own copy
and every worker's status, then writes the result.
"""
import hashlib
import os
import random
import sys
import time

CTL = os.path.abspath(sys.argv[1])
SIZE = int(sys.argv[2]) << 20
WORKERS = int(sys.argv[3])
os.chdir(CTL)
T0 = time.monotonic()


def write_atomic(name, text):
    tmp = f"{name}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, name)


def wait_verify():
    while not os.path.exists("verify"):
        if time.monotonic() - T0 > 300:
            sys.exit(2)
        time.sleep(0.02)


rng = random.Random(1234)
DATA = bytearray(rng.randbytes(1 << 20)) * (SIZE >> 20)
DIGEST = hashlib.sha256(DATA).hexdigest()
TABLE = {f"key-{i}": i * 7 for i in range(50_000)}


def check(who):
    if hashlib.sha256(DATA).hexdigest() != DIGEST:
        return f"{who}: data digest differs"
    if len(TABLE) != 50_000 or any(TABLE[f"key-{i}"] != i * 7 for i in range(0, 50_000, 97)):
        return f"{who}: table differs"
    return None


kids = []
for w in range(WORKERS):
    pid = os.fork()
    if pid == 0:
        n = 0
        view = memoryview(DATA)
        while not os.path.exists("verify"):
            n += sum(view[(n % 256) * 4096:(n % 256) * 4096 + 64])
            time.sleep(0.02)
        err = check(f"worker {w}")
        if err:
            print(err, file=sys.stderr, flush=True)
        os._exit(1 if err else 0)
    kids.append(pid)

write_atomic("ready", f"{os.getpid()}\n")
wait_verify()
err = check("parent")
for w, pid in enumerate(kids):
    _, st = os.waitpid(pid, 0)
    if not err and st != 0:
        err = f"worker {w} failed (status {st:#x})"
write_atomic("result", f"FAIL: {err}\n" if err else "PASS\n")
sys.exit(1 if err else 0)
