"""Evaluates flag documents with the real Python OpenFeature flagd provider in its offline
file mode (the FILE resolver), for integration/tests/it/validation.rs: the check that the
service's strict validation refuses what this client chokes on and accepts what it
evaluates.

For each path given on the command line, the script loads the file in a fresh provider,
evaluates every flag (with the type its variants have) under each context of CONTEXTS, and
prints one line:

    RESULT {"path": ..., "ready": BOOL, "errors": ["<flag>|<context>: <code> <message>", ...]}

`ready` is false when the provider refused the file itself (it did not become ready); then
`errors` holds that failure. Any other failure prints "FAIL <reason>" and exits non-zero.

Usage: file_mode_errors.py [--timeout SECONDS] FILE...
"""

import argparse
import json
import os
import threading

# Same directory: the type rules and code defaults of the equivalence check.
from offline_equivalence import DEFAULTS, flag_type, out

# The attributes the documents under integration/validation target.
CONTEXTS = {
    "empty": (None, {}),
    "user": ("user-1", {"email": "a@example.com", "version": "1.2.0", "color": "red"}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    watchdog = threading.Timer(args.timeout, lambda: (out("FAIL deadline"), os._exit(3)))
    watchdog.daemon = True
    watchdog.start()

    from openfeature import api
    from openfeature.contrib.provider.flagd import FlagdProvider
    from openfeature.contrib.provider.flagd.config import ResolverType
    from openfeature.evaluation_context import EvaluationContext

    contexts = {
        n: EvaluationContext(targeting_key=k, attributes=a) for n, (k, a) in CONTEXTS.items()
    }
    for i, path in enumerate(args.files):
        with open(path, encoding="utf-8") as f:
            flags = json.load(f).get("flags", {})
        domain = f"file-{i}"
        provider = FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=path, deadline_ms=2000
        )
        try:
            api.set_provider_and_wait(provider, domain)
        except Exception as e:  # noqa: BLE001 - a refused file is a result, not a failure
            out("RESULT " + json.dumps(
                {"path": path, "ready": False, "errors": [f"{type(e).__name__}: {e}"]}))
            continue
        client = api.get_client(domain)
        errors = []
        for key, flag in (flags.items() if isinstance(flags, dict) else []):
            kind = flag_type(flag)
            # get_boolean_details, get_string_details, get_integer_details, ...
            method = {"bool": "boolean", "int": "integer"}.get(kind, kind)
            getter = getattr(client, f"get_{method}_details")
            for ctx_name, ctx in contexts.items():
                d = getter(key, DEFAULTS[kind], ctx)
                if d.error_code is not None or str(d.reason) == "Reason.ERROR":
                    errors.append(f"{key}|{ctx_name}: {d.error_code} {d.error_message}")
        out("RESULT " + json.dumps({"path": path, "ready": True, "errors": errors}))
    api.shutdown()
    watchdog.cancel()
    os._exit(0)


if __name__ == "__main__":
    main()
