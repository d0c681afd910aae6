"""Evaluates flag files with the real Python OpenFeature flagd provider twice: in-process
from flagd-redis-sync's SyncFlags stream, and in its own offline file mode (the FILE
resolver, `offline_flag_source_path`), for integration/tests/it/compat_python.rs.

The test sets a file into Redis, waits until the service serves it, then writes one line
on this script's standard input:

    {"name": "<label>", "path": "/path/to/file.json"}

For each such line the script starts a fresh stream provider (domain "stream"; its first
message is the document the service serves now) and a fresh file provider (domain
"offline", reading `path`), evaluates every flag of the file under every evaluation context
of CONTEXTS with both, and prints one line:

    RESULT {"name": ..., "flags": N, "evaluations": {"<flag>|<type>|<context>":
            {"stream": EVAL, "offline": EVAL}, ...}}

where EVAL is {"value", "variant", "reason", "error", "metadata"}. The test compares the two.
Each flag is evaluated with the type its variants have, under every context, and once
more with a type it does not have (so a type mismatch is compared as well); an unknown flag
is evaluated too. Replacing a domain's provider shuts the previous one down.

Any failure prints "FAIL <reason>" on stdout and exits non-zero (a provider that does not
become ready in either mode, or the overall --timeout running out). The script exits with
0 when its standard input is closed.

Usage: offline_equivalence.py --port PORT [--host H] [--timeout SECONDS] [--deadline-ms MS]
"""

import argparse
import json
import os
import sys
import threading
import time

DEFAULTS = {"bool": False, "string": "<default>", "int": -1, "float": -1.0, "object": {}}

# Evaluation contexts with the attributes the flagd testbed files target: targeting keys
# (fractional bucketing, targeting-key-flag), email (the $evaluators rule is_ballmer,
# jobs@orange.com), fn/ln/age/customer (context-aware), version (sem_ver), id
# (starts_with/ends_with), color/tier/user.name (fractional with nested rules), num
# (starts_with on a number), time (against $flagd.timestamp), hashing_input.
CONTEXTS = {
    "empty": (None, {}),
    "ballmer": (
        "5c3d8535-f81a-4478-a6d3-afaa4d51199e",
        {
            "email": "ballmer@macrosoft.com",
            "fn": "Sulisław",
            "ln": "Świętopełk",
            "age": 29,
            "customer": False,
            "version": "2.0.0",
            "id": "abcdef",
            "color": "yellow",
            "tier": "premium",
            "user": {"name": "jon"},
            "time": 1,
            "hashing_input": "some-key",
            "num": 7,
        },
    ),
    "jobs": (
        "user-2",
        {
            "email": "jobs@orange.com",
            "version": "3.1.0",
            "id": "fooxyz",
            "color": "green",
            "tier": "standard",
            "user": {"name": "bob"},
            "time": 99999999999,
            "hashing_input": "other-key",
            "num": "abc1",
        },
    ),
    "odd": (
        "zzz",
        {
            "email": "nobody@example.com",
            "version": "v1.0.0",
            "id": "123",
            "user": {"name": ""},
            "fn": "Sulisław",
            "age": "29",
            "customer": False,
        },
    ),
    "build": ("aaa", {"version": "1.0.0+build", "tier": "premium", "color": "red"}),
}


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def log(msg: str) -> None:
    sys.stderr.write(f"[offline_equivalence {time.monotonic():.3f}] {msg}\n")
    sys.stderr.flush()


def fail(reason: str, code: int = 1) -> None:
    out(f"FAIL {reason}")
    os._exit(code)


def flag_type(flag: dict) -> str:
    """The type the flag's variants have (float if numbers are mixed)."""
    values = list((flag.get("variants") or {}).values())
    if values and all(isinstance(v, bool) for v in values):
        return "bool"
    if values and all(isinstance(v, str) for v in values):
        return "string"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if values and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
    ):
        return "float"
    return "object"


def flags_of(doc: dict) -> dict:
    """name -> flag, for the map form and the array form."""
    flags = doc.get("flags")
    if isinstance(flags, list):
        return {f["key"]: f for f in flags}
    return flags


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=120.0, help="overall deadline, seconds")
    ap.add_argument("--deadline-ms", type=int, default=None)
    args = ap.parse_args()

    watchdog = threading.Timer(
        args.timeout, lambda: fail(f"overall deadline of {args.timeout}s ran out", 3)
    )
    watchdog.daemon = True
    watchdog.start()

    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    from openfeature.evaluation_context import EvaluationContext

    contexts = {
        name: EvaluationContext(targeting_key=key, attributes=attrs)
        for name, (key, attrs) in CONTEXTS.items()
    }

    def details(client, kind: str, key: str, ctx) -> dict:
        getter = {
            "bool": client.get_boolean_details,
            "string": client.get_string_details,
            "int": client.get_integer_details,
            "float": client.get_float_details,
            "object": client.get_object_details,
        }[kind]
        d = getter(key, DEFAULTS[kind], ctx)
        return {
            "value": d.value,
            "variant": d.variant,
            "reason": None if d.reason is None else str(d.reason),
            "error": None if d.error_code is None else str(d.error_code),
            "metadata": dict(d.flag_metadata or {}),
        }

    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        name, path = req["name"], req["path"]
        with open(path, encoding="utf-8") as f:
            flags = flags_of(json.load(f))

        stream = FlagdProvider(
            resolver_type=ResolverType.IN_PROCESS,
            host=args.host,
            port=args.port,
            deadline_ms=args.deadline_ms,
        )
        offline = FlagdProvider(
            resolver_type=ResolverType.FILE,
            offline_flag_source_path=path,
            deadline_ms=args.deadline_ms,
        )
        for domain, provider in (("stream", stream), ("offline", offline)):
            try:
                api.set_provider_and_wait(provider, domain)
            except Exception as e:  # noqa: BLE001 - any failure to start is the test's
                fail(f"{name}: the {domain} provider did not become ready: {type(e).__name__}: {e}")
        clients = {"stream": api.get_client("stream"), "offline": api.get_client("offline")}

        evaluations = {}

        def compare(key: str, kind: str, ctx_name: str) -> None:
            ctx = contexts[ctx_name]
            evaluations[f"{key}|{kind}|{ctx_name}"] = {
                mode: details(client, kind, key, ctx) for mode, client in clients.items()
            }

        for key, flag in flags.items():
            kind = flag_type(flag)
            for ctx_name in contexts:
                compare(key, kind, ctx_name)
            compare(key, "string" if kind != "string" else "bool", "empty")
        compare("no-such-flag-in-any-file", "string", "empty")
        log(f"{name}: {len(flags)} flags, {len(evaluations)} evaluations per mode")
        out("RESULT " + json.dumps(
            {"name": name, "flags": len(flags), "evaluations": evaluations}, sort_keys=True
        ))

    api.shutdown()
    watchdog.cancel()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
