"""Starts a kv-store server for the Python SDK tests (with an auth file, so
every call carries a token, as past loopback it must) and makes the client
generated from the committed spec importable.

KV_STORE_BIN names the server binary (default: target/debug/kv-store, what
`cargo test` builds); KV_STORE_ARGS adds flags (e.g. `--backend etcd ...`:
each server then gets its own key prefix in etcd). KV_PYTHON_CLIENT names the folder the client was
generated into (default: target/python-client, where .ci/contract.sh puts it).
"""

import os
import hashlib
import re
import shlex
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, os.environ.get("KV_PYTHON_CLIENT", str(ROOT / "target" / "python-client")))

LISTENING = re.compile(r"listening on (http://[0-9.:]+)")

# The token the tests send: it may read and write every key, and the status.
TOKEN = "kvs_python-sdk-tests"


@pytest.fixture()
def base_url(tmp_path):
    auth_file = tmp_path / "tokens.toml"
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    auth_file.write_text(
        f'[[token]]\nname = "python-sdk"\nsha256 = "{digest}"\nwrite = [""]\nadmin = true\n'
    )
    yield from serve(["--auth-file", str(auth_file)])


@pytest.fixture()
def open_base_url():
    """A server without an auth file (loopback only), as a first run is."""
    yield from serve([])


def serve(flags):
    binary = os.environ.get("KV_STORE_BIN", str(ROOT / "target" / "debug" / "kv-store"))
    extra = shlex.split(os.environ.get("KV_STORE_ARGS", ""))
    server = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--rate-limit", "0", *flags, *extra],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "KV_ETCD_PREFIX": f"sdk-{uuid.uuid4()}/"},
    )
    url = None
    lines = []
    assert server.stdout is not None
    for line in server.stdout:
        lines.append(line)
        match = LISTENING.search(line)
        if match:
            url = match.group(1)
            break
    assert url, "server did not start:\n" + "".join(lines)
    # Keep draining the log so the server never blocks on a full pipe.
    threading.Thread(target=server.stdout.read, daemon=True).start()
    yield url
    server.terminate()
    server.wait(timeout=10)
