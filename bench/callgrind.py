#!/usr/bin/env python3
"""Instructions per keep-alive request, counted by valgrind's callgrind.

Time on this shared machine wanders by 20% from run to run; the number of
instructions a server executes for a request does not. For each server
(kv-store, the plain-hyper ceiling `bench/ceiling.rs`, and with
`--seed-binary` the seed), this starts it under `valgrind --tool=callgrind`
with instrumentation off, sends a warm-up over one keep-alive connection,
switches it on, sends `--requests` more, switches it off, and
prints the server's instructions (all threads) divided by the requests.

    python3 bench/callgrind.py                       # GET and PUT, 20 000 each
    python3 bench/callgrind.py --kv-binary /tmp/kv-store-before
    python3 bench/callgrind.py --only get --seed-binary /tmp/seed/kv-store
    python3 bench/callgrind.py --only batch,txn      # 2 puts; 2 guards + 2 puts
    python3 bench/callgrind.py --kv-flag=--access-log=false
    python3 bench/callgrind.py --split-body          # bodies after their heads
    python3 bench/callgrind.py --only fanout --watchers 2000 --seed-binary /tmp/seed/kv-store
    python3 bench/callgrind.py --h2                  # GET and PUT over HTTP/2 (h2c)

`fanout` counts one PUT delivered to `--watchers` SSE watchers of its key
(bench/fanout_client.rs holds them open; counting starts once every watch
is open and stops once every watcher has the event), divided by the
watchers: instructions per delivery.

Needs valgrind (apt-get install valgrind). Builds the release binaries
first unless given.
"""

import argparse
import http.client
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
PORT = 3301
VALUE = b"v" * 100


def start(argv, out_file, port):
    # One worker thread: under valgrind, which runs one thread at a time,
    # several workers take turns in ways that vary from run to run (who
    # parks, who steals), and the count with them.
    env = {**os.environ, "TOKIO_WORKER_THREADS": "1"}
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no",
         f"--callgrind-out-file={out_file}", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        preexec_fn=raise_fd_limit)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start under valgrind")


def raise_fd_limit():
    """Watchers need a descriptor each, on both sides."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# What marks a watch as open and the PUT's event, per server (the seed's
# watch opens with `event: WATCH key`).
FANOUT_MARKERS = {"kv-store": [], "seed": ["event: WATCH key", "event: PUT key"]}


def count_from(proc, client, said, what):
    """Waits for `client` to say `said` on stderr, switches counting on and
    tells the client (a line on its stdin) to go on."""
    for line in client.stderr:
        if line.strip() == said:
            break
    else:
        raise RuntimeError(f"{what} failed")
    control(proc.pid, "--instr=on")
    client.stdin.write("\n")
    client.stdin.flush()


def stop_counting(proc):
    control(proc.pid, "--instr=off")
    control(proc.pid, "--dump")


def measure_fanout(name, argv, port, watchers):
    with tempfile.TemporaryDirectory() as out_dir:
        proc = start(argv, os.path.join(out_dir, "callgrind.out"), port)
        try:
            client = subprocess.Popen(
                [os.path.join(RELEASE, "fanout_client"), f"127.0.0.1:{port}", str(watchers),
                 str(proc.pid), *FANOUT_MARKERS[name]],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, env={**os.environ, "FANOUT_HOLD": "1"}, preexec_fn=raise_fd_limit)
            count_from(proc, client, "ready", f"{name}: the watches")
            result = json.loads(client.stdout.readline())
            stop_counting(proc)
            client.stdin.close()
            client.wait(timeout=60)
            if result["received"] != watchers:
                raise RuntimeError(f"{name}: {result['received']} of {watchers} had the event")
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        return total_instructions(out_dir) / watchers


def measure_h2(argv, port, method, count, warmup):
    """`count` requests over one HTTP/2 connection (bench/h2_client.rs)."""
    with tempfile.TemporaryDirectory() as out_dir:
        proc = start(argv, os.path.join(out_dir, "callgrind.out"), port)
        try:
            client = subprocess.Popen(
                [os.path.join(RELEASE, "h2_client"), f"127.0.0.1:{port}", method, str(warmup),
                 str(count)],
                stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            count_from(proc, client, "warm", f"h2 {method}: the warm-up")
            if client.stderr.readline().strip() != "done":
                raise RuntimeError(f"h2 {method}: the requests failed")
            stop_counting(proc)
            client.wait(timeout=60)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        return total_instructions(out_dir) / count


def two_puts(n):
    value = VALUE.decode()
    return [{"key": f"bench-{part}-{n % 10_000}", "value": value} for part in "ab"]


def batch_body(n):
    """A batch of two PUTs."""
    return [{"method": "PUT", **put} for put in two_puts(n)]


def txn_body(n):
    """A transaction of two guards (each reads its key, and holds) and
    the same two PUTs as `batch_body`."""
    puts = two_puts(n)
    guards = [{"key": put["key"], "compare": "LESS", "mod_revision": 2**62} for put in puts]
    return {"guards": guards, "then": [{"op": "PUT", **put} for put in puts]}


class OneWrite(http.client.HTTPConnection):
    """Sends a request's head and body in one write, as curl, wrk and
    hyper's client do; http.client sends them apart (`--split-body`), and a
    server may get them in two reads."""

    def _send_output(self, message_body=None, encode_chunked=False):
        if not isinstance(message_body, bytes):
            return super()._send_output(message_body, encode_chunked)
        self._buffer.extend((b"", b""))
        head = b"\r\n".join(self._buffer)
        del self._buffer[:]
        self.send(head + message_body)
        return None


# What each measured request is: HTTP method, and its body by number.
JSON_REQUESTS = {"BATCH": ("/batch", batch_body), "TXN": ("/txn", txn_body)}


def requests(connection, method, count, path):
    for n in range(count):
        body = None
        headers = {}
        verb = method
        if method == "PUT":
            body = VALUE
            path_n = f"{path}{n % 10_000}"
        elif method in JSON_REQUESTS:
            path_n, make = JSON_REQUESTS[method]
            body = json.dumps(make(n)).encode()
            headers = {"Content-Type": "application/json"}
            verb = "POST"
        else:
            path_n = path
        connection.request(verb, path_n, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path_n}: {response.status}")


def control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def total_instructions(out_dir):
    """The `totals:` Ir of every dump callgrind wrote (the dump taken while
    instrumented; the one at exit holds nothing)."""
    total = 0
    for name in os.listdir(out_dir):
        with open(os.path.join(out_dir, name), errors="replace") as f:
            for line in f:
                m = re.match(r"^totals:\s+(\d+)", line)
                if m:
                    total += int(m.group(1))
    return total


def measure(argv, port, method, count, warmup, split_body):
    with tempfile.TemporaryDirectory() as out_dir:
        proc = start(argv, os.path.join(out_dir, "callgrind.out"), port)
        try:
            client = http.client.HTTPConnection if split_body else OneWrite
            connection = client("127.0.0.1", port, timeout=60)
            path = "/store/bench-key" if method == "GET" else "/store/bench-put-"
            if method == "GET":
                connection.request("PUT", "/store/bench-key", body=VALUE)
                connection.getresponse().read()
            requests(connection, method, warmup, path)
            control(proc.pid, "--instr=on")
            requests(connection, method, count, path)
            stop_counting(proc)
            connection.close()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        return total_instructions(out_dir) / count


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--only", default="get,put")
    parser.add_argument("--kv-binary", default=os.path.join(RELEASE, "kv-store"))
    parser.add_argument("--kv-flag", action="append", default=[],
                        help="a flag for kv-store (repeat it), e.g. --kv-flag=--access-log=false")
    parser.add_argument("--seed-binary",
                        help="the seed's server (built outside this repo), measured beside")
    parser.add_argument("--seed-port", type=int, default=3000,
                        help="the port the seed's server listens on")
    parser.add_argument("--h2", action="store_true",
                        help="GET and PUT over one HTTP/2 connection (h2c), kv-store only")
    parser.add_argument("--watchers", type=int, default=2_000,
                        help="watchers for `fanout`")
    parser.add_argument("--split-body", action="store_true",
                        help="send each request's body in a write of its own, after its head "
                             "(as Python's http.client does)")
    args = parser.parse_args()
    if args.kv_binary == os.path.join(RELEASE, "kv-store"):
        subprocess.run(["cargo", "build", "--release", "--bin", "kv-store"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", "--release", "-p", "kv-bench", "--bin", "ceiling",
                    "--bin", "fanout_client", "--bin", "h2_client"], cwd=ROOT, check=True)
    servers = [
        ("kv-store", [args.kv_binary, "--rate-limit", "0", "--listen", f"127.0.0.1:{PORT}",
                      *args.kv_flag],
         PORT),
        ("ceiling", [os.path.join(RELEASE, "ceiling"), f"127.0.0.1:{PORT}"], PORT),
    ]
    if args.seed_binary:
        servers.append(("seed", [args.seed_binary], args.seed_port))
    for method in args.only.upper().split(","):
        for name, argv, port in servers:
            if method == "FANOUT":
                if name != "ceiling":
                    per = measure_fanout(name, argv, port, args.watchers)
                    print(f"FANOUT {name:9} {per:10,.0f} instructions / delivery")
                continue
            if args.h2:
                if name == "kv-store":
                    per = measure_h2(argv, port, method, args.requests, args.warmup)
                    print(f"{method:4} {name:9} {per:10,.0f} instructions / request (HTTP/2)")
                continue
            if name == "ceiling" and method != "GET":
                continue  # the ceiling reads no body: nothing to compare
            per = measure(argv, port, method, args.requests, args.warmup, args.split_body)
            print(f"{method:4} {name:9} {per:10,.0f} instructions / request")


if __name__ == "__main__":
    main()
