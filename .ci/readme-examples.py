#!/usr/bin/env python3
"""Runs every ```console example in the README, in order, against a fresh
`cargo run --release` on :3000, and checks that each command prints what
the README shows under it.

Left out of the comparison, as they differ from run to run: `date` headers
(the README omits them), `/status`'s `uptime` and `server_time`, and a
listing's `next` cursor (it carries the listing's wall-clock time). A
command with `-N` is a watch, which streams until stopped: it runs for one
second and what it printed by then is compared.

With --update, a failing example's output in the README is replaced by
what the server printed (review the diff before committing it).
"""

import os
import re
import subprocess
import sys
import time
import urllib.request

README = "README.md"

# The seed project's examples, which must stay in the README as they were
# (watches with -N, so curl shows events as they come).
SEED = [
    'curl -X PUT http://localhost:3000/store/key1 -d "value1"',
    "curl http://localhost:3000/store/key1",
    "curl -X DELETE http://localhost:3000/store/key1",
    "curl -X POST http://localhost:3000/store/cas/key1 -H \"Content-Type: application/json\" "
    "-d '{\"expected\":\"old_value\",\"new\":\"new_value\"}'",
    "curl -N http://localhost:3000/watch_key/key1",
    "curl -N -X POST http://localhost:3000/watch -H \"Content-Type: application/json\" "
    "-d '[\"key1\", \"key2\", \"key3\"]'",
]


def examples(text):
    """(command, expected output) pairs from the ```console blocks."""
    pairs = []
    for block in re.findall(r"^```console\n(.*?)^```", text, re.M | re.S):
        command, output = None, []
        lines = iter(block.splitlines())
        for line in lines:
            if line.startswith("$ "):
                if command is not None:
                    pairs.append((command, "\n".join(output)))
                command, output = line[2:], []
                while command.endswith("\\"):
                    command = command[:-1] + next(lines).strip()
            else:
                output.append(line)
        if command is not None:
            pairs.append((command, "\n".join(output)))
    return pairs


def normalise(text):
    text = text.replace("\r", "")
    text = re.sub(r'"uptime":\d+', '"uptime":N', text)
    text = re.sub(r'"server_time":"[^"]*"', '"server_time":T', text)
    text = re.sub(r'"next":"[A-Za-z0-9_-]+"', '"next":C', text)
    lines = [line.rstrip() for line in text.split("\n") if not line.lower().startswith("date:")]
    return "\n".join(lines).strip("\n")


def main():
    text = open(README).read()
    for seed in SEED:
        if f"$ {seed}" not in text.splitlines():
            sys.exit(f"README lacks the seed example: {seed}")
    pairs = examples(text)
    if len(pairs) < len(SEED):
        sys.exit("README: no console examples found")

    subprocess.run(["cargo", "build", "--release"], check=True)
    # The examples run kvctl as an installed one: on PATH.
    subprocess.run(["cargo", "build", "--release", "-p", "kvctl"], check=True)
    env = {**os.environ, "PATH": f"{os.getcwd()}/target/release:{os.environ['PATH']}"}
    log = open("/tmp/kv-store-readme.log", "w")
    server = subprocess.Popen(["cargo", "run", "--release"], stdout=log, stderr=log)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen("http://localhost:3000/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        failed = 0
        update = "--update" in sys.argv[1:]
        position = 0
        for command, expected in pairs:
            streaming = " -N " in f" {command} "
            run = subprocess.run(
                ["bash", "-c", f"timeout 1 {command}" if streaming else command],
                capture_output=True, text=True, timeout=30, env=env,
            )
            actual = normalise(run.stdout)
            # The output follows its own command (the command's start is
            # enough: a longer one was joined from continued lines).
            position = text.index(expected, text.index(f"$ {command[:40]}", position))
            if actual == normalise(expected):
                print(f"ok: {command}")
            elif update:
                printed = run.stdout.removesuffix("\n") if expected.strip() else expected
                text = text[:position] + printed + text[position + len(expected):]
                print(f"updated: {command}")
            else:
                failed += 1
                print(f"FAIL: {command}\n--- README\n{expected}\n--- server\n{run.stdout}")
        if update:
            open(README, "w").write(text)
        print(f"README examples: {len(pairs) - failed} passed, {failed} failed")
        sys.exit(1 if failed else 0)
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
