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
"""

import schemathesis
from schemathesis.transport.serialization import Binary


@schemathesis.hook
def map_case(context, case):
    if case.media_type == "application/octet-stream":
        data = case.body.data if isinstance(case.body, Binary) else case.body
        if isinstance(data, bytes):
            case.body = data.decode("utf-8", errors="replace").encode()
    if case.path == "/store" and case.query:
        case.query.pop("cursor", None)
    if case.path == "/batch" and isinstance(case.body, list):
        seen = set()
        unique = []
        for op in case.body:
            key = op.get("key") if isinstance(op, dict) else None
            if isinstance(key, str):
                if key in seen:
                    continue
                seen.add(key)
            unique.append(op)
        case.body = unique
    return case
