#!/usr/bin/env python3
"""kv-store benchmark, measured against the ceiling of its HTTP stack.

Builds release binaries, then for each scenario starts kv-store (rate limit
off) and a minimal hyper server (bench/ceiling.rs) pinned to one core, and
drives both with wrk pinned to the other core, alternating A/B rounds. For
each scenario it prints, against the ceiling measured in the same round:

- req/s, and the ratio kv-store / ceiling;
- server CPU time per request (utime + stime from /proc/PID/stat over the
  run, divided by the requests served), and the efficiency
  ceiling CPU per request / kv-store CPU per request.

The CPU figure is what targets are set on: it is immune to time stolen by
neighbours on a shared machine, where req/s wander by 20% run to run.

Also: reads alone against reads with 10% writes on the same server
(does the map let writers slow readers?), /batch throughput (ops/s), latency at about half the GET peak,
resident memory per key after loading 1M keys, watch fan-out (memory per
watcher, time from one PUT until every watcher has its event), durable PUT
throughput with --data-dir against in memory, and start-up time on a data
dir of 1M keys, and what hostile clients cost (stalled heads and bodies,
descriptor exhaustion, watchers that never read, memory after a bulk delete),
clients that ask for large answers and never read them (`--only answers`:
resident memory and other clients' GET latency meanwhile),
and the key space: server CPU per listing page of 1000 keys in a 1M-key
store (now, and at a revision 10k writes old), a prefix delete of 100k keys
with readers and writers of other keys running, and a prefix watch's
snapshot of 100k keys. `--only etcd` (builds with `--features etcd`):
kv-store over a single-member etcd against etcd's own JSON gateway on the
same member (GET, PUT, CAS req/s and CPU per request, kv-store's and
etcd's), and 10k SSE watchers on one node against the watches etcd holds.
`--only leases`: issue 23's lease figures on the memory store (`--leases`
of 10 keys each: grant and attach rates, memory per lease, keep-alive
against GET, a put on a lease of 10 keys against one of 100 000, revoking
100 000 keys and 10 000 leases running out together while others GET).
`--only locks` (builds with `--features etcd`): issue 24's lock figures,
on the memory store and on a single-member etcd: handoff latency (a
release to the next waiter's answer) with 100 waiters on one lock, and
acquire + fenced PUT + release cycles per second over 1000 names from 32
workers; on etcd beside `etcdctl lock NAME -- etcdctl put` doing the same
loop (apt-get install etcd-client).
`--only backup`: issue 25's online backup on `--backup-keys` keys (1M):
how long `GET /backup` takes, the server's resident memory during it
against before, the p99 of a 90/10 GET/PUT load during it against
without, the file's size, and how long `kv-store restore` takes.
`--only auth`: GET and PUT efficiency with `--auth-file` (a token on every
request) against without it. `--only tls`: GET and PUT over HTTPS against
the ceiling over the same TLS stack.

Needs wrk and taskset (apt-get install wrk util-linux), and etcd for
`--only etcd` (apt-get install etcd-server).

    python3 bench/run.py                 # everything, 3 rounds of 5 s
    python3 bench/run.py --only get,put --rounds 5
    python3 bench/run.py --only get --kv-binary /tmp/kv-store-before
"""

import argparse
import json
import os
import re
import resource
import socket
import ssl
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUA = os.path.join(ROOT, "bench", "lua")
RELEASE = os.path.join(ROOT, "target", "release")
TICKS = os.sysconf("SC_CLK_TCK")
SERVER_CORE, LOAD_CORE = "0", "1"
KV_PORT, HELLO_PORT = 3201, 3200
KV_BINARY = os.path.join(RELEASE, "kv-store")

CEILING_SCENARIOS = {
    # name: (wrk script, connections, what is measured)
    "get": ("get.lua", 32, "GET of an existing key (100-byte value)"),
    "put": ("put.lua", 32, "PUT of a 100-byte value over 10k keys"),
    "mix": ("mix.lua", 32, "90% GET / 10% PUT over 10k keys"),
    "cas": ("cas.lua", 32, "CAS increments of one hot key, 32 connections"),
}
ALL = list(CEILING_SCENARIOS) + ["concurrency", "batch", "latency", "memory", "fanout",
                                 "durable", "recovery", "hostile", "answers", "keyspace", "etcd",
                                 "auth", "tls", "leases", "locks", "backup"]
ETCD_PORT, ETCD_PEER_PORT = 3279, 3280


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    """A server process pinned to the server core."""

    def __init__(self, argv, port, fd_limit=None, env=None):
        self.port = port
        if fd_limit:
            # sh's ulimit sets the hard limit too: the server cannot raise it.
            argv = ["sh", "-c", f"ulimit -n {fd_limit} && exec \"$0\" \"$@\""] + argv
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE] + argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=raise_fd_limit,
            env={**os.environ, **(env or {})},
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server on :{port} did not start")

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --kv-flag: flags every kv-store server of the run gets (e.g. to compare
# with the access log off).
KV_FLAGS = []


def kv_server(*flags, fd_limit=None):
    return Server(
        [KV_BINARY, "--rate-limit", "0",
         "--listen", f"127.0.0.1:{KV_PORT}", *KV_FLAGS, *flags],
        KV_PORT,
        fd_limit,
    )


def hello_server(*tls):
    return Server(
        [os.path.join(RELEASE, "ceiling"), f"127.0.0.1:{HELLO_PORT}", *tls],
        HELLO_PORT,
    )


def http(method, port, path, body=None, content_type=None, token=None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, method=method
    )
    if content_type:
        request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request) as response:
        return response.read()


def load_keys(count, key_format, value, batch=1000):
    for start in range(0, count, batch):
        ops = [
            {"method": "PUT", "key": key_format.format(i), "value": value}
            for i in range(start, min(start + batch, count))
        ]
        http("POST", KV_PORT, "/batch", json.dumps(ops).encode(), "application/json")


def prepare_kv(scenario):
    value = "v" * 100
    if scenario == "get":
        http("PUT", KV_PORT, "/store/bench-key", value.encode())
    elif scenario in ("mix", "batch"):
        load_keys(10_000, "key{}", value)
    elif scenario == "cas":
        http("PUT", KV_PORT, "/store/counter", b"0")


LATENCY_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(port, script, seconds, connections, env=None, scheme="http"):
    """Runs wrk against `port`; returns requests, req/s and latency (ms)."""
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}",
            f"-d{seconds}s", "--latency", "-s", os.path.join(LUA, script),
            f"{scheme}://127.0.0.1:{port}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}).stdout
    result = {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
    }
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            result[f"p{pct}_ms"] = float(m.group(1)) * LATENCY_UNITS[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(errors.group(1)) if errors else 0
    return result


def measured(server, script, seconds, connections, env=None, scheme="http"):
    before = server.cpu_seconds()
    result = wrk(server.port, script, seconds, connections, env, scheme)
    result["cpu_us"] = (server.cpu_seconds() - before) / result["requests"] * 1e6
    return result


def median(rounds, key):
    return statistics.median(r[key] for r in rounds)


def ceiling_scenario(name, rounds, seconds):
    script, connections, _ = CEILING_SCENARIOS[name]
    kv_rounds, hello_rounds = [], []
    for round_ in range(rounds):
        order = ("hello", "kv") if round_ % 2 == 0 else ("kv", "hello")
        for which in order:
            if which == "kv":
                server = kv_server()
                prepare_kv(name)
                kv_rounds.append(measured(server, script, seconds, connections))
            else:
                server = hello_server()
                hello_rounds.append(measured(server, script, seconds, connections))
            server.stop()
    kv = {k: median(kv_rounds, k) for k in ("rps", "cpu_us", "p50_ms", "p99_ms", "non_2xx")}
    hello = {k: median(hello_rounds, k) for k in ("rps", "cpu_us")}
    return {
        "kv_rps": kv["rps"], "ceiling_rps": hello["rps"],
        "rps_ratio": kv["rps"] / hello["rps"],
        "kv_cpu_us": kv["cpu_us"], "ceiling_cpu_us": hello["cpu_us"],
        "efficiency": hello["cpu_us"] / kv["cpu_us"],
        "kv_non_2xx": kv["non_2xx"],
        "rounds": rounds,
    }


def concurrency_scenario(rounds, seconds):
    """Does a write load slow readers down? The same server and 10k keys,
    rounds alternating between GETs only and 90% GET / 10% PUT."""
    server = kv_server()
    prepare_kv("mix")
    reads, mixed = [], []
    for round_ in range(rounds):
        order = (("reads", "0"), ("mixed", "10"))
        for which, every in order if round_ % 2 == 0 else reversed(order):
            result = measured(server, "mix.lua", seconds, 32, {"WRITE_EVERY": every})
            (reads if which == "reads" else mixed).append(result)
    server.stop()
    reads_rps, mixed_rps = median(reads, "rps"), median(mixed, "rps")
    return {
        "reads_only_rps": reads_rps, "mixed_rps": mixed_rps,
        "mixed_get_rps": mixed_rps * 0.9,
        "mixed_to_reads_only": mixed_rps / reads_rps,
        "reads_only_cpu_us": median(reads, "cpu_us"), "mixed_cpu_us": median(mixed, "cpu_us"),
    }


def batch_scenario(rounds, seconds):
    out = {}
    for kind in ("get", "put"):
        results = []
        for _ in range(rounds):
            server = kv_server()
            prepare_kv("batch")
            results.append(measured(server, "batch.lua", seconds, 8, {"BATCH_KIND": kind}))
            server.stop()
        out[kind] = {
            "ops_per_s": median(results, "rps") * 1000,
            "cpu_us_per_op": median(results, "cpu_us") / 1000,
        }
    return out


def latency_scenario(seconds):
    """GET latency at about half of the peak: wrk's delay() paces each
    connection to one request per millisecond, so the rate is set by the
    number of connections."""
    server = kv_server()
    prepare_kv("get")
    peak = wrk(KV_PORT, "get.lua", seconds, 32)["rps"]
    connections = max(1, round(peak / 2 / 1000 * 1.1))
    result = wrk(KV_PORT, "paced_get.lua", seconds, connections)
    server.stop()
    return {"peak_rps": peak, "connections": connections, "rps": result["rps"],
            "p50_ms": result.get("p50_ms"), "p99_ms": result.get("p99_ms")}


def memory_scenario(keys):
    server = kv_server()
    before = server.rss_bytes()
    started = time.time()
    load_keys(keys, "key{:012d}", "v" * 100)
    elapsed = time.time() - started
    at_once = server.rss_bytes()
    # jemalloc returns the pages of freed request buffers 5 s after they go
    # unused: until then they still count as resident.
    time.sleep(7)
    after = server.rss_bytes()
    server.stop()
    return {"keys": keys, "rss_before": before, "rss_after": after,
            "bytes_per_key": (after - before) / keys,
            "bytes_per_key_at_once": (at_once - before) / keys, "load_seconds": elapsed}


# With --h2-streams N the fan-out's watches are HTTP/2 streams (h2c), N to a
# connection: past this machine's descriptor limit (ulimit -Hn).
H2_STREAMS = None


# With --watch-shape prefix or keys kv-store's watchers watch a prefix of
# the key, or ten keys and a prefix (bench/fanout_client.rs's FANOUT_WATCH); the
# seed and the floor only know one key.
WATCH_SHAPE = "key"


def fanout(server, watchers, markers=(), shape="key"):
    """bench/fanout_client.rs against `server`: `watchers` SSE watchers of one key
    (or `shape`), one PUT, and what delivering it cost. `markers`: what
    marks a watch as open and the PUT's event, for a server other than
    kv-store."""
    env = {**os.environ, **({"FANOUT_H2_STREAMS": str(H2_STREAMS)} if H2_STREAMS else {}),
           "FANOUT_WATCH": shape}
    if shape != "key":
        markers = ("event: sync", "event: put")
    out = subprocess.run(
        ["taskset", "-c", LOAD_CORE, os.path.join(RELEASE, "fanout_client"),
         f"127.0.0.1:{server.port}", str(watchers), str(server.proc.pid), *markers],
        capture_output=True, text=True, check=True, preexec_fn=raise_fd_limit, env=env,
    ).stdout
    return json.loads(out)


# The seed (LambdaP/kv_store, axum): its watch opens with `event: WATCH key
# K` and a write is `event: PUT key K`; it listens on KV_STORE_PORT.
ANCHOR_PORT = 3202
ANCHOR_MARKERS = ("event: WATCH key", "event: PUT key")


def anchor_server(binary):
    """The anchor binary pinned to the server core, like kv-store."""
    return Server([binary], ANCHOR_PORT, env={"KV_STORE_PORT": str(ANCHOR_PORT)})


# bench/fanout_floor.rs: holds the watchers' sockets and writes one prebuilt
# chunk to each from one loop; no watch server on tokio does less per event.
FLOOR_PORT = 3203
FLOOR_MARKERS = ("event: snapshot", "event: put")


def floor_server():
    return Server([os.path.join(RELEASE, "fanout_floor"), f"127.0.0.1:{FLOOR_PORT}"],
                  FLOOR_PORT)


FANOUT_FIGURES = ("bytes_per_watcher", "p50_ms", "p99_ms", "server_cpu_ms")


def fanout_scenario(watchers, rounds, anchor=None):
    """The fan-out on kv-store, the floor and (with `anchor`) the seed, in
    alternating rounds; medians of each figure, and kv-store's against the
    others'."""
    servers = [("kv", kv_server, ())]
    shapes = {"kv": WATCH_SHAPE}
    # The seed and the floor speak HTTP/1 only.
    if anchor and not H2_STREAMS:
        servers.append(("anchor", lambda: anchor_server(anchor), ANCHOR_MARKERS))
    if not H2_STREAMS:
        servers.append(("floor", floor_server, FLOOR_MARKERS))
    runs = {name: [] for name, _, _ in servers}
    for _ in range(rounds):
        for name, start, markers in servers:
            server = start()
            runs[name].append(fanout(server, watchers, markers, shapes.get(name, "key")))
            server.stop()
            print("fanout", name, json.dumps(runs[name][-1]), file=sys.stderr)
    out = {name: {figure: statistics.median(run[figure] for run in results)
                  for figure in FANOUT_FIGURES}
           for name, results in runs.items()}
    out["kv"]["received_all"] = all(run["received"] == watchers for run in runs["kv"])
    for other in ("anchor", "floor"):
        if other in out:
            out[f"kv_over_{other}"] = {figure: round(out["kv"][figure] / out[other][figure], 2)
                                       for figure in FANOUT_FIGURES if out[other][figure]}
    return out


def durable_scenario(rounds, seconds):
    """PUT of a 100-byte value over 10k keys from 64 connections: in memory
    against --data-dir with each --fsync mode, alternating, on the machine's
    own disk (a fresh data dir per round)."""
    modes = {"memory": [], "always": [], "interval": []}
    for round_ in range(rounds):
        order = list(modes) if round_ % 2 == 0 else list(reversed(modes))
        for mode in order:
            data_dir = tempfile.mkdtemp(prefix="kv-bench-", dir=os.path.join(ROOT, "target"))
            flags = [] if mode == "memory" else ["--data-dir", data_dir, "--fsync", mode]
            server = kv_server(*flags)
            modes[mode].append(measured(server, "put.lua", seconds, 64))
            server.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
    memory_rps = median(modes["memory"], "rps")
    out = {}
    for mode, results in modes.items():
        out[mode] = {
            "rps": median(results, "rps"),
            "ratio_to_memory": median(results, "rps") / memory_rps,
            "cpu_us": median(results, "cpu_us"),
            "p99_ms": median(results, "p99_ms"),
            "non_2xx": median(results, "non_2xx"),
        }
    return out


def recovery_scenario(keys):
    """Start-up time on a data dir holding `keys` keys (15-byte key,
    100-byte value): from process start until it accepts connections."""
    data_dir = tempfile.mkdtemp(prefix="kv-bench-", dir=os.path.join(ROOT, "target"))
    server = kv_server("--data-dir", data_dir)
    load_keys(keys, "key{:012d}", "v" * 100)
    server.stop()
    size = sum(os.path.getsize(os.path.join(data_dir, f)) for f in os.listdir(data_dir))
    started = time.time()
    server = kv_server("--data-dir", data_dir)
    elapsed = time.time() - started
    rss = server.rss_bytes()
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)
    return {"keys": keys, "data_dir_bytes": size, "start_seconds": elapsed, "rss_bytes": rss}


def metric(name):
    text = http("GET", KV_PORT, "/metrics").decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def connect_many(count, payload=b""):
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", KV_PORT))
        if payload:
            s.sendall(payload)
        socks.append(s)
    return socks


def close_all(socks):
    for s in socks:
        s.close()


def wait_until(predicate, limit):
    started = time.time()
    while time.time() - started < limit:
        if predicate():
            return time.time() - started
        time.sleep(0.1)
    return None


def keyspace_scenario(keys):
    """Issue 11's figures: listing pages, prefix delete, prefix snapshot."""
    results = {}
    server = kv_server()
    load_keys(keys, "key{:012d}", "v" * 100)

    def page(cursor=None):
        query = "/store?prefix=key&limit=1000" + (f"&cursor={cursor}" if cursor else "")
        return json.loads(http("GET", KV_PORT, query))

    pages = 500
    before = server.cpu_seconds()
    cursor = None
    for _ in range(pages):
        cursor = page(cursor)["next"]
    results["page_cpu_ms"] = (server.cpu_seconds() - before) / pages * 1e3
    # The same cursor again after 10k writes to other keys: the page now
    # also undoes the writes since its revision.
    load_keys(10_000, "other{:08d}", "w" * 100)
    before = server.cpu_seconds()
    for _ in range(pages):
        page(cursor)
    results["page_after_10k_writes_cpu_ms"] = (server.cpu_seconds() - before) / pages * 1e3
    server.stop()

    # A prefix delete of 100k keys while wrk reads and writes other keys.
    server = kv_server()
    load_keys(100_000, "del/{:08d}", "v" * 100)
    prepare_kv("mix")
    results["mix_alone"] = wrk(KV_PORT, "mix.lua", 3, 32)
    outcome = {}

    def delete_soon():
        time.sleep(1)
        started = time.time()
        outcome["body"] = json.loads(http("DELETE", KV_PORT, "/store?prefix=del/"))
        outcome["ms"] = (time.time() - started) * 1e3

    deleter = threading.Thread(target=delete_soon)
    deleter.start()
    results["mix_with_delete"] = wrk(KV_PORT, "mix.lua", 3, 32)
    deleter.join()
    results["delete_100k_ms"] = outcome["ms"]
    results["deleted"] = outcome["body"]["deleted"]
    server.stop()

    # A prefix watch's snapshot of 100k keys, read as fast as the client can.
    server = kv_server()
    load_keys(100_000, "w/{:08d}", "v" * 100)
    rss = server.rss_bytes()
    cpu = server.cpu_seconds()
    sock = socket.create_connection(("127.0.0.1", KV_PORT))
    started = time.time()
    sock.sendall(b"GET /watch?prefix=w/ HTTP/1.1\r\nHost: x\r\n\r\n")
    received, tail, events, peak = 0, b"", 0, rss
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += len(chunk)
        data = tail + chunk
        events += data.count(b"event: snapshot") - tail.count(b"event: snapshot")
        if b"event: sync" in data:
            break
        tail = data[-32:]
        peak = max(peak, server.rss_bytes()) if events % 10_000 < 200 else peak
    elapsed = time.time() - started
    results["snapshot_events"] = events
    results["snapshot_events_per_s"] = events / elapsed
    results["snapshot_cpu_us_per_event"] = (server.cpu_seconds() - cpu) / events * 1e6
    results["snapshot_bytes"] = received
    results["snapshot_rss_growth"] = peak - rss
    sock.close()
    server.stop()
    return results


def hostile_scenario():
    """Issue 10's table, again: what careless and hostile clients cost the
    server now, and how fast it lets go."""
    out = {}
    mib = 1 << 20

    # Stalled heads and silent connections (--header-timeout 10 s, the
    # default).
    server = kv_server()
    base = server.rss_bytes()
    socks = connect_many(2000, b"GET /store/k HTTP/1.1\r\nHost: x\r\n")
    socks += connect_many(2000)
    time.sleep(0.5)
    held = server.rss_bytes()
    open_now = metric("kv_connections")
    closed = wait_until(lambda: metric("kv_connections") <= 1, 30)
    out["stalled_heads"] = {"connections": 4000, "open_before_timeout": open_now,
                            "rss_delta_per_conn": (held - base) / 4000,
                            "all_closed_after_s": closed,
                            "rss_after_close": server.rss_bytes()}
    close_all(socks)
    server.stop()

    # Stalled bodies: 2000 PUTs declaring 1 MiB, sending 256 KiB, then
    # nothing (--body-timeout 2s).
    server = kv_server("--body-timeout", "2s")
    base = server.rss_bytes()
    head = f"PUT /store/k HTTP/1.1\r\nHost: x\r\nContent-Length: {mib}\r\n\r\n".encode()
    socks = connect_many(2000, head + b"x" * (256 * 1024))
    time.sleep(1)
    held = server.rss_bytes()
    answered = 0
    for s in socks:
        s.settimeout(30)
        try:
            answered += s.recv(100).startswith(b"HTTP/1.1 408")
        except OSError:
            pass
    time.sleep(7)  # jemalloc gives pages back after 5 s unused
    out["stalled_bodies"] = {"requests": 2000, "sent_each": 256 * 1024,
                             "rss_while_stalled": held, "rss_base": base,
                             "answered_408": answered,
                             "rss_7s_after_timeout": server.rss_bytes()}
    close_all(socks)
    server.stop()

    # ulimit -n 1024 and 1100 idle connections: the limit answers 503 at
    # once, the accept loop does not spin.
    server = kv_server(fd_limit=1024)
    socks = connect_many(1100)
    time.sleep(0.5)
    before = server.cpu_seconds()
    time.sleep(2)
    cpu = (server.cpu_seconds() - before) / 2
    started = time.time()
    s = socket.create_connection(("127.0.0.1", KV_PORT))
    s.settimeout(10)
    answer = s.recv(200)
    out["fd_limit_1024"] = {"idle_connections": 1100,
                            "server_cpu_share_while_full": cpu,
                            "new_client_answer": answer.split(b"\r\n")[0].decode(),
                            "new_client_answer_ms": (time.time() - started) * 1000}
    s.close()
    close_all(socks)
    server.stop()

    # 1000 watchers that never read; 8 writes of 1 MiB to their key.
    server = kv_server("--max-value-bytes", str(2 * mib))
    base = server.rss_bytes()
    socks = []
    for _ in range(1000):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", KV_PORT))
        s.sendall(b"GET /watch_key/big HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    time.sleep(1)
    watching = server.rss_bytes()
    for _ in range(8):
        http("PUT", KV_PORT, "/store/big", b"x" * mib)
    time.sleep(1)
    out["non_reading_watchers"] = {
        "watchers": 1000, "rss_base": base, "rss_watching": watching,
        "rss_after_8_writes": server.rss_bytes(),
        "per_watcher_after_writes": (server.rss_bytes() - watching) / 1000,
        "watch_bytes": metric("kv_watch_bytes"),
        "dropped": metric("kv_dropped_watchers_total")}
    close_all(socks)
    time.sleep(7)
    out["non_reading_watchers"]["rss_7s_after_close"] = server.rss_bytes()
    server.stop()

    # 600 MiB of values, then deleted: does memory go back?
    server = kv_server("--max-value-bytes", str(2 * mib))
    empty = server.rss_bytes()
    for i in range(600):
        http("PUT", KV_PORT, f"/store/bulk{i}", b"x" * mib)
    loaded = server.rss_bytes()
    for i in range(600):
        http("DELETE", KV_PORT, f"/store/bulk{i}")
    samples = {}
    for at in (1, 5, 10, 20, 30):
        time.sleep(at - (max(samples) if samples else 0))
        samples[at] = server.rss_bytes()
    out["bulk_delete"] = {"empty_rss": empty, "loaded_rss": loaded,
                          "rss_after_s": samples,
                          "history_bytes_kept": 256 * mib}
    server.stop()
    return out


def answers_scenario(hold_seconds):
    """Issue 15's table, again: clients that ask for large answers and never
    read them. For each attack, on a fresh server with default flags and 64
    values of 1 MiB: resident memory at its peak and while held, when it
    falls back, and the GET latency of other clients meanwhile (wrk, 8
    connections, 10 s, from 1 s into the attack)."""
    mib = 1 << 20
    attacker = os.path.join(RELEASE, "unread_answers")
    attacks = [
        ("h2_zero_window_x1", "h2-listings", 1),
        ("h2_zero_window_x2", "h2-listings", 2),
        ("batches_64_gets_x16", "batches", 16),
        ("h1_listings_x100", "h1-listings", 100),
    ]
    out = {}
    for name, mode, connections in attacks:
        server = kv_server()
        http("PUT", KV_PORT, "/store/bench-key", b"v" * 100)
        for n in range(64):
            http("PUT", KV_PORT, f"/store/big%2F{n:02}", b"v" * mib)
        time.sleep(1)
        base = server.rss_bytes()
        alone = wrk(KV_PORT, "get.lua", 5, 8)
        proc = subprocess.Popen(
            ["taskset", "-c", LOAD_CORE, attacker, f"127.0.0.1:{KV_PORT}", mode,
             str(connections)],
            stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()
        started = time.time()
        during = {}

        def measure_others():
            time.sleep(1)
            during.update(wrk(KV_PORT, "get.lua", 10, 8))

        others = threading.Thread(target=measure_others)
        others.start()
        samples = []
        freed_after = None
        while time.time() - started < hold_seconds:
            rss = server.rss_bytes()
            samples.append((time.time() - started, rss))
            if freed_after is None and time.time() - started > 12 and rss < base + 64 * mib:
                freed_after = time.time() - started
            time.sleep(0.25)
        others.join()
        proc.kill()
        proc.wait()
        peak = max(rss for _, rss in samples)
        at_20 = min(samples, key=lambda s: abs(s[0] - 20))[1]
        out[name] = {
            "rss_base_mb": round(base / mib),
            "rss_peak_mb": round(peak / mib),
            "rss_at_20s_mb": round(at_20 / mib),
            "rss_end_mb": round(samples[-1][1] / mib),
            "back_within_64mb_after_s": round(freed_after, 1) if freed_after else None,
            "others_get_p50_ms": during.get("p50_ms"),
            "others_get_p99_ms": during.get("p99_ms"),
            "others_get_non_2xx": during.get("non_2xx"),
            "alone_get_p99_ms": alone.get("p99_ms"),
            "stalled_closed": metric("kv_stalled_connections_total"),
            "refused_answers": metric("kv_refused_answers_total"),
        }
        print(name, json.dumps(out[name]), file=sys.stderr)
        server.stop()
    return out


def lease_wrk(server, script, env, until, count, connections=16):
    """Runs a lease script (which sends `count` requests, then only probes)
    until the metric `until` reaches what the script builds; returns how
    long that took and the server's CPU per request (µs). wrk itself runs
    out its duration, so the end is read from the server."""
    metric_name, target = until
    cpu = server.cpu_seconds()
    started = time.time()
    proc = subprocess.Popen(
        ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{connections}", "-d600s",
         "-s", os.path.join(LUA, script), f"http://127.0.0.1:{server.port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    try:
        while (metric(metric_name) or 0) < target:
            if time.time() - started > 600:
                raise RuntimeError(f"{script} did not reach {metric_name} {target}")
            time.sleep(0.02)
        elapsed = time.time() - started
        used = server.cpu_seconds() - cpu
    finally:
        proc.terminate()
        proc.wait()
    return {"seconds": elapsed, "cpu_us": used / count * 1e6}


def leases_scenario(leases, seconds):
    """Issue 23's figures for leases on the memory store."""
    mib = 1 << 20
    out = {}
    per = 10
    server = kv_server("--max-leases", str(leases + 10))
    http("PUT", KV_PORT, "/store/bench-key", b"v" * 100)
    time.sleep(1)
    before = server.rss_bytes()
    granted = lease_wrk(server, "lease_grant.lua", {"LEASES": str(leases)},
                        ("kv_leases", leases), leases)
    time.sleep(6)
    with_leases = server.rss_bytes()
    attached = lease_wrk(server, "lease_grant.lua", {"LEASES": str(leases), "ATTACH": str(per)},
                         ("kv_keys", leases * per + 1), leases)
    time.sleep(6)
    with_keys = server.rss_bytes()
    out["grant"] = {
        "leases": leases,
        "per_s": leases / granted["seconds"],
        "cpu_us_per_grant": granted["cpu_us"],
        "bytes_per_lease": (with_leases - before) / leases,
    }
    out["attach"] = {
        "keys": leases * per,
        "keys_per_s": leases * per / attached["seconds"],
        "cpu_us_per_key": attached["cpu_us"] / per,
        "bytes_per_key_on_a_lease": (with_keys - with_leases) / (leases * per),
        "rss_mb": round(with_keys / mib),
    }
    print("leases", json.dumps(out), file=sys.stderr)
    alive = measured(server, "keepalive.lua", seconds, 32, {"LEASES": str(leases)})
    get = measured(server, "get.lua", seconds, 32)
    out["keepalive"] = {
        "rps": alive["rps"], "cpu_us": alive["cpu_us"], "non_2xx": alive["non_2xx"],
        "get_rps": get["rps"], "get_cpu_us": get["cpu_us"],
        "cpu_vs_get": alive["cpu_us"] / get["cpu_us"],
    }
    print("keepalive", json.dumps(out["keepalive"]), file=sys.stderr)

    # A put on a lease of 10 keys, and on one of 100 000 (etcd #15993).
    big = 100_000
    for name, count, first in (("small", per, leases + 1), ("big", big, leases + 2)):
        lease = f"{first:016x}"
        http("POST", KV_PORT, "/leases", json.dumps({"ttl": 3600, "id": lease}).encode(),
             "application/json")
        for start in range(0, count, 1000):
            ops = [{"method": "PUT", "key": f"{name}/{i}", "value": "v" * 100, "lease": lease}
                   for i in range(start, min(start + 1000, count))]
            http("POST", KV_PORT, "/batch", json.dumps(ops).encode(), "application/json")
        out[f"put_on_lease_of_{count}"] = measured(
            server, "lease_put.lua", seconds, 32,
            {"KEYS": str(count), "LEASE": lease, "PREFIX": f"{name}%2F"})
    out["put_without_lease"] = measured(server, "put.lua", seconds, 32)
    print("put on a lease", json.dumps({k: v for k, v in out.items() if "put" in k}),
          file=sys.stderr)

    # Revoking the lease of 100 000 keys while others GET.
    quiet = wrk(KV_PORT, "get.lua", 4, 8)
    during = {}
    others = threading.Thread(target=lambda: during.update(wrk(KV_PORT, "get.lua", 4, 8)))
    others.start()
    time.sleep(1.5)
    started = time.time()
    http("DELETE", KV_PORT, f"/leases/{leases + 2:016x}")
    revoke_s = time.time() - started
    others.join()
    out["revoke_100k_keys"] = {
        "seconds": revoke_s, "others_p99_ms": during.get("p99_ms"),
        "others_p99_quiet_ms": quiet.get("p99_ms"), "non_2xx": during.get("non_2xx"),
    }
    print("revoke", json.dumps(out["revoke_100k_keys"]), file=sys.stderr)
    server.stop()

    # 10 000 leases of 10 keys, granted within about a second, expire
    # together; GETs meanwhile, against the same window without it.
    storm = 10_000
    server = kv_server()
    http("PUT", KV_PORT, "/store/bench-key", b"v" * 100)
    quiet = wrk(KV_PORT, "get.lua", 4, 8)
    ttl = 10
    granted_at = time.time()
    granted = lease_wrk(server, "lease_grant.lua", {"LEASES": str(storm), "TTL": str(ttl)},
                        ("kv_leases", storm), storm)
    lease_wrk(server, "lease_grant.lua", {"LEASES": str(storm), "ATTACH": str(per)},
              ("kv_keys", storm * per + 1), storm)
    # From just before the first deadline, across all of them.
    time.sleep(max(0.0, granted_at + ttl - 1 - time.time()))
    cpu = server.cpu_seconds()
    during = wrk(KV_PORT, "get.lua", 6, 8)
    out["expiry_storm"] = {
        "leases": storm, "keys": storm * per, "granted_in_s": granted["seconds"],
        "expired_leases": metric("kv_expired_leases_total"),
        "others_p99_ms": during.get("p99_ms"), "others_p99_quiet_ms": quiet.get("p99_ms"),
        "others_p50_ms": during.get("p50_ms"), "server_cpu_s": server.cpu_seconds() - cpu,
    }
    print("expiry storm", json.dumps(out["expiry_storm"]), file=sys.stderr)
    server.stop()
    return out


def backup_scenario(keys, seconds):
    """Issue 25's figures for an online backup of `keys` keys."""
    server = kv_server()
    load_keys(keys, "key{}", "v" * 100)
    # jemalloc returns the pages of freed request buffers 5 s after they go
    # unused: until then they still count as resident.
    time.sleep(7)
    before = server.rss_bytes()
    window = max(seconds, 15)
    quiet = wrk(KV_PORT, "mix.lua", window, 16)
    during = {}
    loader = threading.Thread(target=lambda: during.update(wrk(KV_PORT, "mix.lua", window, 16)))
    loader.start()
    time.sleep(1)
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], server.rss_bytes())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    work = tempfile.mkdtemp(prefix="kv-bench-backup-")
    path = os.path.join(work, "kv.backup")
    cpu = server.cpu_seconds()
    started = time.time()
    subprocess.run(["taskset", "-c", LOAD_CORE, "curl", "-sf", "-o", path,
                    f"http://127.0.0.1:{KV_PORT}/backup"], check=True)
    took = time.time() - started
    backup_cpu = server.cpu_seconds() - cpu
    stop.set()
    sampler.join()
    loader.join()
    server.stop()
    started = time.time()
    subprocess.run([KV_BINARY, "restore", path, "--data-dir", os.path.join(work, "data")],
                   check=True, stdout=subprocess.DEVNULL)
    restored = time.time() - started
    out = {
        "keys": keys, "backup_s": took, "backup_server_cpu_s": backup_cpu,
        "file_bytes": os.path.getsize(path),
        "rss_before_mb": before / 1e6, "rss_peak_during_mb": peak[0] / 1e6,
        "load_p99_quiet_ms": quiet.get("p99_ms"), "load_p99_during_ms": during.get("p99_ms"),
        "load_p50_quiet_ms": quiet.get("p50_ms"), "load_p50_during_ms": during.get("p50_ms"),
        "load_rps_quiet": quiet["rps"], "load_rps_during": during.get("rps"),
        "load_window_s": window, "restore_s": restored,
    }
    print("backup", json.dumps(out), file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return out


def lock_client(*args):
    """bench/lock_client.rs on the load core; its JSON line."""
    run = subprocess.run(["taskset", "-c", LOAD_CORE, os.path.join(RELEASE, "lock_client"),
                          *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(run.stdout)


def lock_figures(url, rounds, seconds, server_cpu):
    """Handoff latency (each round a fresh line of 100 waiters on its own
    lock) and acquire + fenced PUT + release cycles over 1000 names."""
    handoffs = []
    for _ in range(rounds):
        handoffs.append(lock_client("handoff", url, 100))
    cpu = server_cpu()
    loop = lock_client("loop", url, 1000, 32, seconds)
    loop["server_cpu_ms_per_cycle"] = (server_cpu() - cpu) / loop["cycles"] * 1e3
    return {
        "handoff_p50_ms": statistics.median(h["p50_ms"] for h in handoffs),
        "handoff_p99_ms": statistics.median(h["p99_ms"] for h in handoffs),
        "handoff_rounds": handoffs,
        "cycles": loop,
    }


def etcdctl_loop(endpoint, workers, seconds):
    """`etcdctl lock NAME -- etcdctl put` in `workers` shell loops over 1000
    names for `seconds`: etcd's own tools doing the cycle (unfenced: etcd
    leaves that to the client). Cycles per second."""
    script = ('end=$((SECONDS + $1)); n=0; while [ $SECONDS -lt $end ]; do '
              'name=name-$((RANDOM % 1000)); '
              'etcdctl --endpoints=$0 lock "$name" -- etcdctl --endpoints=$0 put "$name-data" v '
              '>/dev/null || exit 1; n=$((n + 1)); done; echo $n')
    started = time.time()
    procs = [subprocess.Popen(["taskset", "-c", LOAD_CORE, "bash", "-c", script, endpoint,
                               str(seconds)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "ETCDCTL_API": "3"})
             for _ in range(workers)]
    total = sum(int(p.communicate()[0].strip() or 0) for p in procs)
    return {"workers": workers, "cycles": total, "per_s": total / (time.time() - started)}


def locks_scenario(rounds, seconds):
    """Issue 24's figures: on the memory store, then on a single-member
    etcd beside etcdctl."""
    out = {}
    server = kv_server()
    out["memory"] = lock_figures(f"http://127.0.0.1:{KV_PORT}", rounds, seconds,
                                 server.cpu_seconds)
    print("locks memory", json.dumps(out["memory"]), file=sys.stderr)
    server.stop()
    data_dir = tempfile.mkdtemp(prefix="kv-bench-etcd-")
    etcd = etcd_server(data_dir)
    wait_etcd()
    kv = kv_server("--backend", "etcd", "--etcd-endpoints", f"http://127.0.0.1:{ETCD_PORT}")
    out["etcd"] = lock_figures(f"http://127.0.0.1:{KV_PORT}", rounds, seconds,
                               lambda: kv.cpu_seconds() + etcd.cpu_seconds())
    print("locks etcd", json.dumps(out["etcd"]), file=sys.stderr)
    kv.stop()
    out["etcdctl"] = etcdctl_loop(f"http://127.0.0.1:{ETCD_PORT}", 32, seconds)
    print("locks etcdctl", json.dumps(out["etcdctl"]), file=sys.stderr)
    etcd.stop()
    shutil.rmtree(data_dir, ignore_errors=True)
    return out


def wait_etcd():
    """Until the bench's etcd member answers healthy."""
    for _ in range(100):
        try:
            if b'"health":"true"' in urllib.request.urlopen(
                    f"http://127.0.0.1:{ETCD_PORT}/health").read():
                return
        except OSError:
            pass
        time.sleep(0.1)


def etcd_server(data_dir):
    """One etcd member on the server core, as the issue's comparison asks."""
    url = f"http://127.0.0.1:{ETCD_PORT}"
    peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    return Server(["etcd", "--name", "bench", "--data-dir", data_dir,
                   "--listen-client-urls", url, "--advertise-client-urls", url,
                   "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                   "--initial-cluster", f"bench={peer}", "--max-txn-ops", "1024"],
                  ETCD_PORT)


def etcd_watchers():
    """The watchers etcd holds (its own gauge)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{ETCD_PORT}/metrics").read().decode()
    found = re.search(r"^etcd_debugging_mvcc_watcher_total (\S+)$", text, re.M)
    return int(float(found.group(1))) if found else None


def etcd_scenario(rounds, seconds, watchers):
    """kv-store over etcd against etcd's own JSON gateway, on the same
    single-member etcd, in alternating rounds: GET, PUT and CAS req/s and CPU
    per request (kv-store's CPU plus etcd's for kv-store; etcd's for the
    gateway, which runs inside etcd). Then 10k SSE watchers of one key on
    one kv-store node, and how many watches etcd holds meanwhile."""
    data_dir = tempfile.mkdtemp(prefix="kv-bench-etcd-")
    etcd = etcd_server(data_dir)
    wait_etcd()
    kv = kv_server("--backend", "etcd", "--etcd-endpoints", f"http://127.0.0.1:{ETCD_PORT}",
                   "--etcd-max-txn-ops", "1024")
    http("PUT", KV_PORT, "/store/bench-key", b"v" * 100)
    http("PUT", KV_PORT, "/store/counter", b"0")
    env = {"LUA_DIR": LUA}
    out = {}
    for op, (kv_script, gateway_script) in {
        "get": ("get.lua", "etcd_get.lua"),
        "put": ("put.lua", "etcd_put.lua"),
        "cas": ("cas_same.lua", "etcd_cas.lua"),
    }.items():
        kv_rounds, gateway_rounds = [], []
        for round_ in range(rounds):
            order = ("kv", "gateway") if round_ % 2 == 0 else ("gateway", "kv")
            for which in order:
                port, script = (KV_PORT, kv_script) if which == "kv" else (ETCD_PORT, gateway_script)
                kv_before, etcd_before = kv.cpu_seconds(), etcd.cpu_seconds()
                result = wrk(port, script, seconds, 32, env)
                kv_cpu = kv.cpu_seconds() - kv_before if which == "kv" else 0.0
                etcd_cpu = etcd.cpu_seconds() - etcd_before
                result["cpu_us"] = (kv_cpu + etcd_cpu) / result["requests"] * 1e6
                result["kv_cpu_us"] = kv_cpu / result["requests"] * 1e6
                (kv_rounds if which == "kv" else gateway_rounds).append(result)
        out[op] = {
            "kv_rps": median(kv_rounds, "rps"), "gateway_rps": median(gateway_rounds, "rps"),
            "rps_ratio": median(kv_rounds, "rps") / median(gateway_rounds, "rps"),
            "kv_cpu_us": median(kv_rounds, "cpu_us"),
            "kv_own_cpu_us": median(kv_rounds, "kv_cpu_us"),
            "gateway_cpu_us": median(gateway_rounds, "cpu_us"),
            "kv_non_2xx": median(kv_rounds, "non_2xx"),
            "gateway_non_2xx": median(gateway_rounds, "non_2xx"),
        }
        print("etcd", op, json.dumps(out[op]), file=sys.stderr)
    seen = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            seen.append(etcd_watchers())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out["fanout"] = fanout(kv, watchers)
    stop.set()
    sampler.join()
    out["fanout"]["etcd_watchers_max"] = max((n for n in seen if n is not None), default=None)
    kv.stop()
    etcd.stop()
    shutil.rmtree(data_dir, ignore_errors=True)
    return out


def auth_scenario(rounds, seconds):
    """GET and PUT with --auth-file (every request carries a token checked
    against its scopes) against the same server without it, and the ceiling,
    in rotating rounds: the efficiency each reaches."""
    minted = subprocess.run([KV_BINARY, "token", "new", "--name", "bench", "--write", ""],
                            capture_output=True, text=True, check=True).stdout
    token = minted.splitlines()[0]
    auth_dir = tempfile.mkdtemp(prefix="kv-bench-auth-")
    auth_file = os.path.join(auth_dir, "tokens.toml")
    with open(auth_file, "w") as f:
        f.write(minted[minted.index("[[token]]"):])
    out = {}
    for op, script in (("get", "get.lua"), ("put", "put.lua")):
        runs = {"off": [], "on": [], "ceiling": []}
        for round_ in range(rounds):
            order = ["off", "on", "ceiling"]
            order = order[round_ % 3:] + order[:round_ % 3]
            for which in order:
                if which == "ceiling":
                    server = hello_server()
                    runs[which].append(measured(server, script, seconds, 32))
                else:
                    flags = ["--auth-file", auth_file] if which == "on" else []
                    secret = token if which == "on" else None
                    server = kv_server(*flags)
                    http("PUT", KV_PORT, "/store/bench-key", b"v" * 100, token=secret)
                    env = {"KV_TOKEN": secret} if secret else None
                    runs[which].append(measured(server, script, seconds, 32, env))
                server.stop()
        ceiling = median(runs["ceiling"], "cpu_us")
        out[op] = {
            "off_cpu_us": median(runs["off"], "cpu_us"),
            "on_cpu_us": median(runs["on"], "cpu_us"),
            "ceiling_cpu_us": ceiling,
            "efficiency_off": ceiling / median(runs["off"], "cpu_us"),
            "efficiency_on": ceiling / median(runs["on"], "cpu_us"),
            "on_non_2xx": median(runs["on"], "non_2xx"),
        }
        print("auth", op, json.dumps(out[op]), file=sys.stderr)
    shutil.rmtree(auth_dir, ignore_errors=True)
    return out


def tls_scenario(rounds, seconds):
    """GET and PUT over HTTPS (kept-alive connections, so the handshake is
    paid once per connection) against the ceiling served over the same TLS
    stack (bench/ceiling.rs with a certificate), alternating rounds."""
    tls_dir = tempfile.mkdtemp(prefix="kv-bench-tls-")
    cert, key = os.path.join(tls_dir, "cert.pem"), os.path.join(tls_dir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    out = {}
    for op, script in (("get", "get.lua"), ("put", "put.lua")):
        kv_rounds, hello_rounds = [], []
        for round_ in range(rounds):
            order = ("hello", "kv") if round_ % 2 == 0 else ("kv", "hello")
            for which in order:
                if which == "kv":
                    server = kv_server("--tls-cert", cert, "--tls-key", key)
                    body = b"v" * 100
                    urllib.request.urlopen(urllib.request.Request(
                        f"https://127.0.0.1:{KV_PORT}/store/bench-key", data=body, method="PUT"),
                        context=ssl._create_unverified_context())
                    kv_rounds.append(measured(server, script, seconds, 32, scheme="https"))
                else:
                    server = hello_server(cert, key)
                    hello_rounds.append(measured(server, script, seconds, 32, scheme="https"))
                server.stop()
        kv_cpu, hello_cpu = median(kv_rounds, "cpu_us"), median(hello_rounds, "cpu_us")
        out[op] = {"kv_rps": median(kv_rounds, "rps"), "ceiling_rps": median(hello_rounds, "rps"),
                   "kv_cpu_us": kv_cpu, "ceiling_cpu_us": hello_cpu,
                   "efficiency": hello_cpu / kv_cpu, "kv_non_2xx": median(kv_rounds, "non_2xx")}
        print("tls", op, json.dumps(out[op]), file=sys.stderr)
    shutil.rmtree(tls_dir, ignore_errors=True)
    return out


def main():
    global KV_BINARY, H2_STREAMS, WATCH_SHAPE, KV_FLAGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--only", default=",".join(ALL),
                        help="comma-separated scenarios: " + ",".join(ALL))
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--watchers", type=int, default=10_000)
    parser.add_argument("--backup-keys", type=int, default=1_000_000,
                        help="keys (100-byte values) for --only backup")
    parser.add_argument("--leases", type=int, default=100_000,
                        help="leases (of 10 keys each) for --only leases")
    parser.add_argument("--kv-binary", default=KV_BINARY,
                        help="the kv-store to measure (e.g. an older build, for A/B)")
    parser.add_argument("--kv-flag", action="append", default=[],
                        help="a flag for every kv-store server (repeat it), e.g. "
                             "--kv-flag=--access-log=false")
    parser.add_argument("--h2-streams", type=int,
                        help="fan-out over HTTP/2 (h2c) with this many watch streams per "
                             "connection, for kv-store only (the seed and the floor speak HTTP/1)")
    parser.add_argument("--watch-shape", choices=("key", "prefix", "keys"), default="key",
                        help="what kv-store's fan-out watchers watch: the key, a prefix of it, "
                             "or ten keys and a prefix (POST /watch)")
    parser.add_argument("--hold-seconds", type=int, default=45,
                        help="how long each attack of --only answers is held and watched")
    parser.add_argument("--anchor-binary",
                        help="the seed's server (LambdaP/kv_store, built outside this repo with "
                             "its rate limit removed), measured beside kv-store in the fan-out")
    args = parser.parse_args()
    KV_BINARY = os.path.abspath(args.kv_binary)
    KV_FLAGS = args.kv_flag
    H2_STREAMS = args.h2_streams
    WATCH_SHAPE = args.watch_shape
    only = args.only.split(",")

    features = ["--features", "etcd"] if "etcd" in only or "locks" in only else []
    subprocess.run(["cargo", "build", "--release", "--bin", "kv-store", *features],
                   cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-p", "kv-bench", "--bins"], cwd=ROOT, check=True)
    results = {}
    for name in CEILING_SCENARIOS:
        if name in only:
            results[name] = ceiling_scenario(name, args.rounds, args.seconds)
            print(name, json.dumps(results[name]), file=sys.stderr)
    if "concurrency" in only:
        results["concurrency"] = concurrency_scenario(args.rounds, args.seconds)
        print("concurrency", json.dumps(results["concurrency"]), file=sys.stderr)
    if "batch" in only:
        results["batch"] = batch_scenario(args.rounds, args.seconds)
    if "latency" in only:
        results["latency"] = latency_scenario(args.seconds)
    if "memory" in only:
        results["memory"] = memory_scenario(args.keys)
    if "fanout" in only:
        results["fanout"] = fanout_scenario(args.watchers, args.rounds, args.anchor_binary)
    if "durable" in only:
        results["durable"] = durable_scenario(args.rounds, args.seconds)
        print("durable", json.dumps(results["durable"]), file=sys.stderr)
    if "recovery" in only:
        results["recovery"] = recovery_scenario(args.keys)
    if "keyspace" in only:
        results["keyspace"] = keyspace_scenario(args.keys)
    if "etcd" in only:
        results["etcd"] = etcd_scenario(args.rounds, args.seconds, args.watchers)
    if "auth" in only:
        results["auth"] = auth_scenario(args.rounds, args.seconds)
    if "tls" in only:
        results["tls"] = tls_scenario(args.rounds, args.seconds)
    if "hostile" in only:
        raise_fd_limit()
        results["hostile"] = hostile_scenario()
    if "answers" in only:
        results["answers"] = answers_scenario(args.hold_seconds)
    if "leases" in only:
        results["leases"] = leases_scenario(args.leases, args.seconds)
    if "locks" in only:
        results["locks"] = locks_scenario(args.rounds, args.seconds)
    if "backup" in only:
        results["backup"] = backup_scenario(args.backup_keys, args.seconds)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
