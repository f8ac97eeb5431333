"""Reads every event off a JetStream stream and checks it with the official
CloudEvents SDK (the `cloudevents` package): the SDK must accept the message's
binary-mode headers and data, `time` must be RFC 3339, `datacontenttype`
application/json, and `dataschema` an absolute URL that serves a JSON Schema
the event's data is valid against.

    python check_cloudevents.py --nats nats://127.0.0.1:4222 --stream PROSPECTS \
        --types io.signup.prospect.signedup.v1,...

Prints one line per event type; exits 1 when an event fails a check or a
listed type has no event.
"""

import argparse
import asyncio
import json
import re
import sys
import urllib.parse
import urllib.request
import uuid

import jsonschema
import nats
import nats.js.errors
from cloudevents.core.bindings.http import HTTPMessage, from_binary
from cloudevents.core.formats.json import JSONFormat

# RFC 3339 date-time (section 5.6), with the "T" and an offset or "Z".
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def check(headers, body, schemas):
    """The problems of one message (an empty list when it passes)."""
    problems = []
    try:
        event = from_binary(HTTPMessage(headers=headers, body=body), JSONFormat())
    except Exception as error:  # the SDK's refusal is the finding
        return None, [f"the SDK refused the message: {error!r}"]
    if event.get_specversion() != "1.0":
        problems.append(f"specversion {event.get_specversion()!r}")
    try:
        uuid.UUID(event.get_id())
    except ValueError:
        problems.append(f"id {event.get_id()!r} is not a UUID")
    if not event.get_source().startswith("/"):
        problems.append(f"source {event.get_source()!r} is not a path reference")
    raw_time = headers.get("ce-time", "")
    if not RFC3339.match(raw_time) or event.get_time() is None or event.get_time().tzinfo is None:
        problems.append(f"time {raw_time!r} is not an RFC 3339 timestamp")
    if event.get_datacontenttype() != "application/json":
        problems.append(f"datacontenttype {event.get_datacontenttype()!r}")
    if not isinstance(event.get_data(), dict):
        problems.append("data is not a JSON object")
    url = event.get_dataschema()
    parsed = urllib.parse.urlparse(url or "")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        problems.append(f"dataschema {url!r} is not an absolute URL")
    elif not parsed.path.endswith(f"/{event.get_type()}.json"):
        problems.append(f"dataschema {url!r} does not name the type {event.get_type()}")
    else:
        if url not in schemas:
            with urllib.request.urlopen(url, timeout=10) as response:
                schemas[url] = json.load(response)
        try:
            jsonschema.validate(event.get_data(), schemas[url])
        except jsonschema.ValidationError as error:
            problems.append(f"data does not match {url}: {error.message}")
    return event, problems


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--nats", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--types", required=True, help="comma-separated ce-types that must be present")
    args = parser.parse_args()
    expected = [t for t in args.types.split(",") if t]

    client = await nats.connect(args.nats)
    js = client.jetstream()
    info = await js.stream_info(args.stream)
    counts = {t: 0 for t in expected}
    failures = 0
    schemas = {}
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            message = await js.get_msg(args.stream, seq)
        except nats.js.errors.NotFoundError:
            continue  # purged (an erasure removes its prospect's personal events)
        headers = {name: value for name, value in (message.headers or {}).items()}
        event, problems = check(headers, message.data or b"", schemas)
        kind = event.get_type() if event else headers.get("ce-type", "?")
        counts[kind] = counts.get(kind, 0) + 1
        for problem in problems:
            failures += 1
            print(f"FAIL {kind} (stream sequence {seq}): {problem}")
    await client.close()

    for kind, count in sorted(counts.items()):
        print(f"{kind}: {count} events read by the CloudEvents SDK")
        if count == 0:
            failures += 1
            print(f"FAIL {kind}: no event of this type in the stream")
    print(f"cloudevents: {sum(counts.values())} events, {len(counts)} types, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
