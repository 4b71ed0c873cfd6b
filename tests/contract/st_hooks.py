"""schemathesis hooks: what the spec cannot say about PUT bodies.

A value is UTF-8 text, but the PUT body is documented as
`application/octet-stream` (`format: binary`) because that is the one shape
every client generator accepts (progenitor and openapi-python-client refuse
or mangle the alternatives). Left alone, schemathesis sends arbitrary bytes
as "valid" bodies and counts the server's 400 for non-UTF-8 as a rejected
valid request. This hook turns such bytes into the UTF-8 text they nearly
are (invalid sequences become U+FFFD). The 400 for bytes that are not UTF-8
is covered by the server's own tests (tests/keys.rs).

A listing's `cursor` is opaque: only the ones the server gave out are valid
(any other is 400 by design), so generated cases leave it out. Cursors are
covered by tests/keyspace.rs and the SDK tests, which page through listings.

A batch names each key once (etcd's rule for a transaction; 400 otherwise),
which JSON Schema cannot say of one field of the items: generated batches
keep the first op of each key. The 400 is covered by tests/batch.rs.

A put takes a `ttl` or a `lease`, not both; a transaction's guard names a
key or a prefix and one operand (none for EXISTS / ABSENT), its operations
carry only the fields of their kind, a branch writes each key once, and all
of it fits --max-txn-ops: rules of one field against another, which the
schema does not say. Generated cases are made to follow them; the 400s are
covered by tests/txn.rs and tests/leases.rs.

A lock acquisition or a campaign takes a `lease` or a `ttl`: exactly one,
which the schema (two optional fields) does not say either; the 400s are
covered by tests/locks.rs.
"""

import schemathesis
from schemathesis.transport.serialization import Binary

OPERANDS = ("value", "mod_revision", "create_revision", "version", "lease")
MAX_TXN_OPS = 128


def one_lifetime(item):
    """A `ttl` or a `lease`, not both."""
    if isinstance(item, dict) and item.get("ttl") is not None and item.get("lease") is not None:
        item.pop("lease")


def positive(case):
    """Whether the case is meant to be valid: only those are made to follow
    the rules (a negative case must stay invalid)."""
    meta = getattr(case, "meta", None)
    return meta is None or str(meta.generation.mode) == "positive"


def key_or_prefix(item):
    if "key" in item and "prefix" in item:
        item.pop("prefix")
    if "key" not in item and "prefix" not in item:
        item["key"] = "k"


def guard(item):
    if not isinstance(item, dict):
        return item
    key_or_prefix(item)
    given = [name for name in OPERANDS if name in item]
    if item.get("compare") in ("EXISTS", "ABSENT"):
        for name in given:
            item.pop(name)
        if "prefix" in item:
            item["compare"] = "ABSENT"
    else:
        for name in given[1:]:
            item.pop(name)
        if not given:
            item["mod_revision"] = 1
    return item


def operation(item):
    if not isinstance(item, dict):
        return item
    key_or_prefix(item)
    kind = item.get("op")
    if kind == "PUT" and "prefix" in item:
        item["key"] = item.pop("prefix") or "k"
    if kind == "PUT":
        one_lifetime(item)
    else:
        for name in ("value", "ttl", "lease"):
            item.pop(name, None)
    if not (kind == "GET" and "prefix" in item):
        item.pop("limit", None)
    if kind == "DELETE" and item.get("prefix") == "":
        item["prefix"] = "p/"
    return item


def distinct_writes(ops):
    """Each key written once in a branch, and no write under a prefix the
    branch deletes."""
    keys, prefixes, kept = set(), [], []
    for item in ops:
        if not isinstance(item, dict) or item.get("op") not in ("PUT", "DELETE"):
            kept.append(item)
            continue
        if "key" in item:
            if item["key"] in keys or any(item["key"].startswith(p) for p in prefixes):
                continue
            keys.add(item["key"])
        else:
            prefix = item["prefix"]
            overlaps = any(k.startswith(prefix) for k in keys) or any(
                p.startswith(prefix) or prefix.startswith(p) for p in prefixes
            )
            if overlaps:
                continue
            prefixes.append(prefix)
        kept.append(item)
    return kept


def transaction(body):
    if not isinstance(body, dict):
        return body
    room = MAX_TXN_OPS
    for part in ("guards", "then", "else"):
        items = body.get(part)
        if not isinstance(items, list):
            continue
        items = [guard(i) for i in items] if part == "guards" else [operation(i) for i in items]
        if part != "guards":
            items = distinct_writes(items)
        body[part] = items[:room]
        room -= len(body[part])
    return body


@schemathesis.hook
def map_case(context, case):
    if case.media_type == "application/octet-stream":
        data = case.body.data if isinstance(case.body, Binary) else case.body
        if isinstance(data, bytes):
            case.body = data.decode("utf-8", errors="replace").encode()
    if case.path == "/store" and case.query:
        case.query.pop("cursor", None)
    if not positive(case):
        return case
    if case.path == "/store/{key}" and case.query:
        one_lifetime(case.query)
    if case.path == "/store/cas/{key}":
        one_lifetime(case.body)
    if case.method == "POST" and case.path in ("/locks/{name}", "/elections/{name}") \
            and isinstance(case.body, dict):
        one_lifetime(case.body)
        if case.body.get("ttl") is None and case.body.get("lease") is None:
            case.body["ttl"] = 1
    if case.path == "/txn":
        case.body = transaction(case.body)
    if case.path == "/batch" and isinstance(case.body, list):
        seen = set()
        unique = []
        for op in case.body:
            key = op.get("key") if isinstance(op, dict) else None
            if isinstance(key, str):
                if key in seen:
                    continue
                seen.add(key)
            if positive(case):
                one_lifetime(op)
            unique.append(op)
        case.body = unique
    return case
