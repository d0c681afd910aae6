"""Drives the real Python OpenFeature flagd provider (in-process resolver) against
flagd-redis-sync, for integration/tests/it/compat_python.rs.

Protocol on stdout, one line each, flushed at once:

    READY {"<flag>": {"value": ..., "variant": ..., "reason": ..., "error": ...}, ...}
    CHANGED {"flags": {<same shape>}, "flags_changed": [...]}
    STALE {"message": "..."}            the connection is lost; the provider reconnects
    RECONNECTED {<same shape as READY>} the provider is ready again after a STALE

("flags_changed": the union of the events' changed keys since the previous line, for
diagnostics only: the SDK runs event handlers on a thread pool, so an event can be
handled after a later flag set is in place, and its keys cannot be paired with a line.)

READY comes once, after the provider has its first flag set (set_provider_and_wait). Then
every PROVIDER_CONFIGURATION_CHANGED event re-evaluates the flags, and a CHANGED line is
printed whenever the results differ from the last line printed. STALE and RECONNECTED
come once per disconnection: STALE at the first PROVIDER_STALE event while the provider's
status is STALE, RECONNECTED at the next PROVIDER_READY event (which also re-evaluates, so
a set that changed while the service was down is reported by a CHANGED line first). The
status is checked when an event is handled because handlers run on a thread pool: a stale
event handled after the provider is back must not print STALE. The script ends with exit
code 0 when its standard input is closed (the test's way of saying "done").

Any failure prints "FAIL <reason>" on stdout and exits non-zero: a fatal provider error,
a provider that never becomes ready, or the overall --timeout running out (a watchdog,
so even a hang inside the provider or the gRPC library ends the script). Diagnostics
(every provider event) go to stderr.

Usage: provider_check.py --port PORT [--host H] [--selector S] [--timeout SECONDS]
                         [--deadline-ms MS] [--stream-deadline-ms MS]
                         [--retry-backoff-ms MS] [--retry-backoff-max-ms MS]
                         [--tls [--cert-path CA_PEM]]
                         [--default-authority NAME] TYPE:FLAG [TYPE:FLAG ...]
where TYPE is bool, string, int, float or object. A Unix socket is reached with
--host unix:///path/to/sock --port N (gRPC dials "unix:///path/to/sock:N", so the socket's
file name must end in ":N") and --default-authority localhost (gRPC would otherwise send
the socket path as :authority, which HTTP/2 servers built on h2 refuse).
"""

import argparse
import json
import os
import queue
import sys
import threading
import time

DEFAULTS = {"bool": False, "string": "<default>", "int": -1, "float": -1.0, "object": {}}


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def log(msg: str) -> None:
    sys.stderr.write(f"[provider_check {time.monotonic():.3f}] {msg}\n")
    sys.stderr.flush()


def fail(reason: str, code: int = 1) -> None:
    out(f"FAIL {reason}")
    # os._exit: provider and gRPC threads must not keep a failed script alive.
    os._exit(code)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--selector", default=None)
    ap.add_argument("--timeout", type=float, default=60.0, help="overall deadline, seconds")
    ap.add_argument(
        "--deadline-ms",
        type=int,
        default=None,
        help="the provider's start-up deadline for the first flag set (provider default: 500)",
    )
    ap.add_argument(
        "--stream-deadline-ms",
        type=int,
        default=None,
        help="the provider ends each SyncFlags stream after this and reconnects (default: 600000)",
    )
    ap.add_argument(
        "--retry-backoff-max-ms",
        type=int,
        default=None,
        help="the provider's wait before reopening an ended stream, and the gRPC channel's "
        "longest reconnection backoff (default: 5000)",
    )
    ap.add_argument(
        "--retry-backoff-ms",
        type=int,
        default=None,
        help="the gRPC channel's first reconnection backoff (default: 1000)",
    )
    ap.add_argument("--tls", action="store_true", help="connect with TLS")
    ap.add_argument("--cert-path", default=None, help="PEM CA to verify the server with")
    ap.add_argument("--default-authority", default=None, help="the :authority to send")
    ap.add_argument("flags", nargs="+", metavar="TYPE:FLAG")
    args = ap.parse_args()

    watchdog = threading.Timer(
        args.timeout, lambda: fail(f"overall deadline of {args.timeout}s ran out", 3)
    )
    watchdog.daemon = True
    watchdog.start()

    flags = []
    for spec in args.flags:
        kind, _, key = spec.partition(":")
        if kind not in DEFAULTS or not key:
            fail(f"bad flag spec {spec!r}: want TYPE:FLAG with TYPE in {sorted(DEFAULTS)}", 2)
        flags.append((kind, key))

    # Imported after the watchdog started: importing grpc is slow on a loaded machine.
    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    from openfeature.event import ProviderEvent
    from openfeature.exception import ErrorCode
    from openfeature.provider import ProviderStatus

    events: "queue.Queue" = queue.Queue()

    def on_event(kind):
        def handler(details):
            log(f"event {kind.value}: {details}")
            events.put((kind, details))

        return handler

    for kind in ProviderEvent:
        api.add_handler(kind, on_event(kind))

    provider = FlagdProvider(
        resolver_type=ResolverType.IN_PROCESS,
        host=args.host,
        port=args.port,
        selector=args.selector,
        deadline_ms=args.deadline_ms,
        stream_deadline_ms=args.stream_deadline_ms,
        retry_backoff_ms=args.retry_backoff_ms,
        retry_backoff_max_ms=args.retry_backoff_max_ms,
        tls=args.tls,
        cert_path=args.cert_path,
        default_authority=args.default_authority,
    )
    try:
        api.set_provider_and_wait(provider)
    except Exception as e:  # noqa: BLE001 - any failure to start is the test's failure
        fail(f"provider did not become ready: {type(e).__name__}: {e}")
    client = api.get_client()

    getters = {
        "bool": client.get_boolean_details,
        "string": client.get_string_details,
        "int": client.get_integer_details,
        "float": client.get_float_details,
        "object": client.get_object_details,
    }

    def evaluate() -> dict:
        result = {}
        for kind, key in flags:
            d = getters[kind](key, DEFAULTS[kind])
            result[key] = {
                "value": d.value,
                "variant": d.variant,
                "reason": None if d.reason is None else str(d.reason),
                "error": None if d.error_code is None else str(d.error_code),
            }
        return result

    last = evaluate()
    out("READY " + json.dumps(last, sort_keys=True))

    # Standard input closed: the test is done with us.
    done = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()
        done.set()
        events.put((None, None))

    threading.Thread(target=watch_stdin, daemon=True).start()

    changed_keys: set = set()
    stale = False

    def report_if_changed() -> None:
        nonlocal last
        now = evaluate()
        if now != last:
            last = now
            report = {"flags": now, "flags_changed": sorted(changed_keys)}
            changed_keys.clear()
            out("CHANGED " + json.dumps(report, sort_keys=True))

    while not done.is_set():
        kind, details = events.get()
        if kind is None:
            break
        if kind is ProviderEvent.PROVIDER_ERROR and details.error_code == ErrorCode.PROVIDER_FATAL:
            fail(f"fatal provider error: {details.message}")
        if kind is ProviderEvent.PROVIDER_STALE:
            if not stale and client.get_provider_status() is ProviderStatus.STALE:
                stale = True
                out("STALE " + json.dumps({"message": details.message}))
            continue
        if kind is ProviderEvent.PROVIDER_READY:
            if stale and client.get_provider_status() is ProviderStatus.READY:
                # The flag set is in place before the ready event is emitted.
                report_if_changed()
                stale = False
                out("RECONNECTED " + json.dumps(last, sort_keys=True))
            continue
        if kind is not ProviderEvent.PROVIDER_CONFIGURATION_CHANGED:
            continue
        # An event may be handled after a later flag set is already in place, so the
        # keys are reported as the union over every event since the last line.
        changed_keys.update(details.flags_changed or [])
        report_if_changed()

    api.shutdown()
    watchdog.cancel()
    log("stdin closed; provider shut down")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
