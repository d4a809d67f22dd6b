"""pystate.py - CPython interpreter state across checkpoint/restore (Stasis test program).

Run as `python3 pystate.py CTL_DIR`; follows the workload protocol of workloads/common.h:
  1. build state, then write CTL_DIR/ready = "<pid>\n" (ready.tmp.<pid> + rename);
  2. loop (10 ms ticks) until CTL_DIR/verify exists; it may be checkpointed, killed and
     restored at any point of this loop;
  3. verify everything, write CTL_DIR/result = "PASS\n" or "FAIL: <msg>\n" (atomically) and
     exit 0 / 1. Fails by itself after 300 s without a verify request.

State held across the checkpoint (checked at verify):
  - a dict of 100k entries (plus one entry added per tick), values derived from the keys;
  - a graph of class instances (regular, __slots__, a subclass with a property) with cycles,
    a weakref and a WeakValueDictionary, the id() (address) of some objects; gc.collect()
    must walk the whole heap without trouble;
  - a generator suspended mid-iteration (big-int Fibonacci pairs), advanced once per tick;
  - a bytearray of 8 MiB with a seeded pseudorandom pattern, and a memoryview on it;
  - a file open for writing ("w+b"): 1 MiB written and flushed, then the offset moved to the
    middle and 12 bytes written into Python's buffer but not flushed, so the kernel offset
    (lseek) is mid-file and the unflushed bytes live only in process memory;
  - a worker thread (threading.Thread: pthread, futex-based locks and a queue.Queue) that
    consumes one item per tick and keeps thread-local state; it must still be running;
  - a Python-level SIGUSR1 handler (CPython's C handler + its wakeup machinery).
"""
import gc
import hashlib
import os
import queue
import random
import signal
import sys
import threading
import time
import weakref

CTL = os.path.abspath(sys.argv[1])
os.chdir(CTL)
T0 = time.monotonic()
TIMEOUT = 300.0


def write_atomic(name, content):
    tmp = os.path.join(CTL, "%s.tmp.%d" % (name, os.getpid()))
    with open(tmp, "w") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(CTL, name))


def report(ok, msg=""):
    if not ok:
        sys.stderr.write("FAIL (pid %d): %s\n" % (os.getpid(), msg))
        sys.stderr.flush()
    write_atomic("result", "PASS\n" if ok else "FAIL: %s\n" % msg.replace("\n", " | "))
    os._exit(0 if ok else 1)


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


# ---------------------------------------------------------------- state

def dict_value(i):
    return ((i * 2654435761) % (1 << 32), "v%d" % i)


BIG_N = 100_000
big = {"k%d" % i: dict_value(i) for i in range(BIG_N)}


class Node:
    def __init__(self, idx):
        self.idx = idx
        self.edges = []
        self.payload = ("node-%d-" % idx) * (1 + idx % 5)
        self.parent = None


class Slotted:
    __slots__ = ("a", "b", "link")

    def __init__(self, a, b):
        self.a, self.b, self.link = a, b, None


class Special(Node):
    @property
    def doubled(self):
        return self.idx * 2


GRAPH_N = 5000
nodes = [Special(i) if i % 10 == 0 else Node(i) for i in range(GRAPH_N)]
for i, n in enumerate(nodes):
    n.edges = [nodes[(i * 7 + 1) % GRAPH_N], nodes[(i * 13 + 5) % GRAPH_N]]
    n.parent = nodes[i // 2]
slotted = [Slotted(i, -i) for i in range(1000)]
for i, s in enumerate(slotted):
    s.link = slotted[(i + 1) % len(slotted)]  # one big cycle
weak0 = weakref.ref(nodes[0])
weak_map = weakref.WeakValueDictionary((i, nodes[i]) for i in range(0, GRAPH_N, 100))
ids = {i: id(nodes[i]) for i in range(0, GRAPH_N, 250)}


def fib_pairs():
    a, b, n = 0, 1, 0
    try:
        while True:
            yield n, a
            a, b, n = b, a + b, n + 1
    finally:
        pass


gen = fib_pairs()
gen_taken = 0
gen_last = None
for _ in range(50):
    gen_last = next(gen)
    gen_taken += 1

PATTERN_SEED = 0x5EED
BUF_LEN = 8 << 20
buf = bytearray(random.Random(PATTERN_SEED).randbytes(BUF_LEN))
buf_digest = hashlib.sha256(buf).hexdigest()
view = memoryview(buf)[4096:8192]

FILE_LEN = 1 << 20
FILE_OFF = 300_001
UNFLUSHED = b"HELLO-BEFORE"
file_pattern = random.Random(7).randbytes(FILE_LEN)
wf = open(os.path.join(CTL, "pyfile.dat"), "w+b")
wf.write(file_pattern)
wf.flush()
wf.seek(FILE_OFF)
wf.write(UNFLUSHED)  # stays in Python's buffer
wf_ino = os.fstat(wf.fileno()).st_ino

usr1_count = 0


def on_usr1(signum, frame):
    global usr1_count
    usr1_count += 1


signal.signal(signal.SIGUSR1, on_usr1)

work_q = queue.Queue()
lock = threading.Lock()
consumed = {"sum": 0, "count": 0}
stop = threading.Event()
tls = threading.local()
worker_report = {}


def worker():
    tls.name = "worker-local"
    tls.items = []
    while not stop.is_set():
        try:
            item = work_q.get(timeout=0.05)
        except queue.Empty:
            continue
        with lock:
            consumed["sum"] += item
            consumed["count"] += 1
        tls.items.append(item)
        work_q.task_done()
    worker_report["tls_name"] = getattr(tls, "name", None)
    worker_report["tls_sum"] = sum(tls.items)


th = threading.Thread(target=worker, name="pystate-worker", daemon=True)
th.start()
tls.name = "main-local"

tick = 0
produced = 0
while consumed["count"] == 0 or tick < 5:  # the worker runs before we say ready
    tick += 1
    produced += tick
    work_q.put(tick)
    time.sleep(0.01)

ready_tick = tick
write_atomic("ready", "%d\n" % os.getpid())
print("pystate: ready (pid %d, %d threads)" % (os.getpid(), threading.active_count()), flush=True)

verify_path = os.path.join(CTL, "verify")
while not os.path.exists(verify_path):
    if time.monotonic() - T0 > TIMEOUT:
        report(False, "timeout: no verify request within %d s" % TIMEOUT)
    tick += 1
    big["tick%d" % tick] = tick
    gen_last = next(gen)
    gen_taken += 1
    produced += tick
    work_q.put(tick)
    time.sleep(0.01)

# ---------------------------------------------------------------- verify


def verify():
    # dict
    added = tick - ready_tick
    check(len(big) == BIG_N + added, "dict has %d entries, expected %d" % (len(big), BIG_N + added))
    for i in range(BIG_N):
        v = big.get("k%d" % i)
        check(v == dict_value(i), "dict entry k%d is %r, expected %r" % (i, v, dict_value(i)))
    for t in range(ready_tick + 1, tick + 1):
        v = big.get("tick%d" % t)
        check(v == t, "dict entry tick%d is %r" % (t, v))
    # graph
    for i, n in enumerate(nodes):
        check(n.idx == i, "node %d has idx %r" % (i, n.idx))
        check(n.edges[0] is nodes[(i * 7 + 1) % GRAPH_N] and n.edges[1] is nodes[(i * 13 + 5) % GRAPH_N],
              "node %d: edges point to the wrong objects" % i)
        check(n.parent is nodes[i // 2], "node %d: parent is wrong" % i)
        check(n.payload == ("node-%d-" % i) * (1 + i % 5), "node %d: payload corrupted" % i)
        check(isinstance(n, Special) == (i % 10 == 0), "node %d: class is %s" % (i, type(n).__name__))
        if i % 10 == 0:
            check(n.doubled == 2 * i, "node %d: property returned %r" % (i, n.doubled))
    for i, s in enumerate(slotted):
        check((s.a, s.b) == (i, -i) and s.link is slotted[(i + 1) % len(slotted)],
              "slotted object %d corrupted" % i)
    check(weak0() is nodes[0], "weakref to nodes[0] is dead or wrong")
    check(sorted(weak_map.keys()) == list(range(0, GRAPH_N, 100)), "WeakValueDictionary lost entries")
    for i, a in ids.items():
        check(id(nodes[i]) == a, "id(nodes[%d]) changed: %#x -> %#x" % (i, a, id(nodes[i])))
    before = len(gc.get_objects())
    gc.collect()
    check(len(gc.get_objects()) > 0.5 * before, "gc.collect() freed most objects (%d -> %d)"
          % (before, len(gc.get_objects())))
    check(weak0() is nodes[0], "weakref died after gc.collect()")
    # generator: the next pair continues the sequence
    exp_last = (gen_taken - 1, fib(gen_taken - 1))
    check(gen_last == exp_last, "generator's last pair %r, expected %r" % (gen_last[0], exp_last[0]))
    nxt = next(gen)
    check(nxt == (gen_taken, fib(gen_taken)), "generator continued with n=%d (expected %d) or a wrong value"
          % (nxt[0], gen_taken))
    # bytearray
    check(len(buf) == BUF_LEN, "bytearray length %d" % len(buf))
    check(hashlib.sha256(buf).hexdigest() == buf_digest, "bytearray digest changed")
    check(buf == random.Random(PATTERN_SEED).randbytes(BUF_LEN), "bytearray differs from its pattern")
    check(view.obj is buf and bytes(view) == bytes(buf[4096:8192]), "memoryview no longer on the bytearray")
    # file: Python-level and kernel offsets, unflushed bytes, same inode
    check(os.fstat(wf.fileno()).st_ino == wf_ino, "file fd now refers to another inode")
    kpos = os.lseek(wf.fileno(), 0, os.SEEK_CUR)
    check(kpos == FILE_OFF, "kernel file offset %d, expected %d" % (kpos, FILE_OFF))
    check(wf.tell() == FILE_OFF + len(UNFLUSHED), "Python file position %d, expected %d"
          % (wf.tell(), FILE_OFF + len(UNFLUSHED)))
    wf.write(b"AFTER")
    wf.flush()
    check(os.lseek(wf.fileno(), 0, os.SEEK_CUR) == FILE_OFF + len(UNFLUSHED) + 5,
          "kernel offset after flush is wrong")
    with open(os.path.join(CTL, "pyfile.dat"), "rb") as rf:
        data = rf.read()
    want = bytearray(file_pattern)
    ins = UNFLUSHED + b"AFTER"
    want[FILE_OFF:FILE_OFF + len(ins)] = ins
    check(len(data) == FILE_LEN, "file size %d, expected %d" % (len(data), FILE_LEN))
    check(data == bytes(want), "file content differs (first difference at %d)"
          % next((i for i in range(len(data)) if data[i] != want[i]), -1))
    # thread: still alive and consuming; queue drained; thread-local state kept
    check(th.is_alive(), "worker thread is not alive")
    check(tls.name == "main-local", "main thread-local value changed to %r" % getattr(tls, "name", None))
    c0 = consumed["count"]
    work_q.put(0)
    produced_total = produced
    deadline = time.monotonic() + 5
    while work_q.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.01)
    check(work_q.unfinished_tasks == 0, "worker did not drain the queue within 5 s (%d left)"
          % work_q.unfinished_tasks)
    check(consumed["count"] > c0, "worker did not consume after verify")
    with lock:
        check(consumed["sum"] == produced_total, "worker consumed sum %d, produced %d"
              % (consumed["sum"], produced_total))
    stop.set()
    th.join(5)
    check(not th.is_alive(), "worker thread did not stop within 5 s")
    check(worker_report.get("tls_name") == "worker-local", "worker thread-local name %r"
          % worker_report.get("tls_name"))
    check(worker_report.get("tls_sum") == produced_total, "worker thread-local sum %r, expected %d"
          % (worker_report.get("tls_sum"), produced_total))
    # signal handler
    n0 = usr1_count
    os.kill(os.getpid(), signal.SIGUSR1)
    deadline = time.monotonic() + 2
    while usr1_count == n0 and time.monotonic() < deadline:
        time.sleep(0.01)
    check(usr1_count == n0 + 1, "SIGUSR1 handler ran %d times, expected 1" % (usr1_count - n0))
    check(signal.getsignal(signal.SIGUSR1) is on_usr1, "SIGUSR1 handler changed")
    # timeouts, stdlib, allocation still work
    check(sum(range(10 ** 6)) == 10 ** 6 * (10 ** 6 - 1) // 2, "arithmetic is broken")
    junk = [bytes(1000) for _ in range(10000)]
    del junk
    print("pystate: info: tick %d, generator at %d, %d items consumed" % (tick, gen_taken, consumed["count"]),
          flush=True)


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


try:
    verify()
except CheckFailed as e:
    report(False, str(e))
except Exception as e:  # noqa: BLE001 - any exception is a failure to report
    import traceback
    report(False, "exception: %r\n%s" % (e, traceback.format_exc()))
report(True)
