#!/usr/bin/env python3
"""check-compose.py [FILE]: static checks of compose/docker-compose.yml (`make compose-check`).

Needs no Docker engine and no compose plugin: only python3 and PyYAML (Debian package
python3-yaml). Checks what `docker compose config` would reject plus what this set-up
relies on: `$` escaping, service references, paths, keyspace-notification flags, the Redis
key, and that flagd's sources point at the service's gRPC port.
"""

import json
import re
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

try:
    import yaml
except ImportError:
    print(
        "check-compose: PyYAML is not installed (apt-get install python3-yaml, "
        "or pip install pyyaml); nothing was checked",
        file=sys.stderr,
    )
    sys.exit(2)

REQUIRED = {"redis", "flags-seed", "flagd-redis-sync", "flagd"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
errors = []


def error(msg):
    errors.append(msg)


def strings(node, path=""):
    """Every string in the document with its path (keys included)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{path}/{k}", str(k)
            yield from strings(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from strings(v, f"{path}/{i}")
    elif isinstance(node, str):
        yield path, node


def unescape(s):
    """What compose hands the container: `$$` becomes `$`."""
    return s.replace("$$", "$")


def as_list(cmd):
    return cmd if isinstance(cmd, list) else str(cmd).split()


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {k: unescape(str(v)) for k, v in env.items()}


def main():
    file = Path(sys.argv[1] if len(sys.argv) > 1 else "compose/docker-compose.yml")
    base = file.resolve().parent
    doc = yaml.safe_load(file.read_text())
    services = doc.get("services") or {}

    # Compose interpolates `$NAME` and `${NAME}` and rejects any other lone `$`; this file
    # uses no variables, so every `$` must be written `$$`.
    for path, s in strings(doc):
        if "$" in s.replace("$$", ""):
            error(f"{path}: unescaped '$' in {s!r} (write $$ for a literal $)")

    missing = REQUIRED - services.keys()
    if missing:
        error(f"services missing: {sorted(missing)}")

    host_ports = {}
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            error(f"{name}: neither image nor build")
        deps = svc.get("depends_on") or {}
        deps = {d: {} for d in deps} if isinstance(deps, list) else deps
        for dep, spec in deps.items():
            if dep not in services:
                error(f"{name}: depends_on unknown service {dep!r}")
                continue
            cond = (spec or {}).get("condition", "service_started")
            if cond not in CONDITIONS:
                error(f"{name}: depends_on {dep}: unknown condition {cond!r}")
            if cond == "service_healthy" and "healthcheck" not in services[dep]:
                error(f"{name}: waits for {dep} to be healthy, but {dep} has no healthcheck")
        for vol in svc.get("volumes") or []:
            src = str(vol).split(":")[0]
            if src.startswith((".", "/")) and not (base / src).exists():
                error(f"{name}: volume source {src} does not exist")
        for port in svc.get("ports") or []:
            parts = str(port).split(":")
            if len(parts) < 2:
                continue
            hp = ":".join(parts[:-1])
            if hp in host_ports:
                error(f"{name}: host port {hp} also published by {host_ports[hp]}")
            host_ports[hp] = name
        build = svc.get("build")
        if build:
            build = {"context": build} if isinstance(build, str) else build
            ctx = base / build.get("context", ".")
            dockerfile = ctx / build.get("dockerfile", "Dockerfile")
            if not ctx.is_dir():
                error(f"{name}: build context {ctx} is not a directory")
            elif not dockerfile.is_file():
                error(f"{name}: Dockerfile {dockerfile} not found")
            else:
                check_dockerfile(name, dockerfile)

    if missing:
        return
    check_redis(services["redis"])
    key = check_service(services, services["flagd-redis-sync"])
    check_seed(services["flags-seed"], key)
    check_flagd(services, services["flagd"])


def check_dockerfile(name, path):
    text = path.read_text()
    exposed = {p for line in re.findall(r"^EXPOSE\s+(.+)$", text, re.M) for p in line.split()}
    for port in ("8016", "8014"):
        if port not in exposed:
            error(f"{name}: {path.name} does not EXPOSE {port}")
    if not re.search(r"^ENTRYPOINT\s", text, re.M):
        error(f"{name}: {path.name} has no ENTRYPOINT")


def check_redis(svc):
    cmd = [unescape(c) for c in as_list(svc.get("command") or [])]
    try:
        letters = cmd[cmd.index("--notify-keyspace-events") + 1]
    except (ValueError, IndexError):
        error("redis: no --notify-keyspace-events in command")
        return
    have = set(letters.replace("A", "g$lshzxetd"))
    lacking = set("Kg$xe") - have
    if lacking:
        error(f"redis: notify-keyspace-events {letters!r} lacks {''.join(sorted(lacking))}")


def check_service(services, svc):
    uri = env_of(svc).get("REDIS_URI")
    if not uri:
        error("flagd-redis-sync: REDIS_URI is not set")
        return None
    u = urlparse(uri)
    if u.scheme not in ("redis", "rediss"):
        error(f"flagd-redis-sync: REDIS_URI scheme {u.scheme!r} is not redis:// or rediss://")
    if u.hostname not in services:
        error(f"flagd-redis-sync: REDIS_URI host {u.hostname!r} is not a service")
    key = (parse_qs(u.query).get("key") or [None])[0]
    if not key:
        error("flagd-redis-sync: REDIS_URI has no ?key=")
    return key


def check_seed(svc, key):
    script = " ".join(unescape(c) for c in as_list(svc.get("entrypoint") or []))
    script += " " + " ".join(unescape(c) for c in as_list(svc.get("command") or []))
    m = re.search(r"\bSET\s+(\S+)", script, re.I)
    if not m:
        error("flags-seed: no redis-cli SET found")
    elif key and m.group(1) != key:
        error(f"flags-seed: SETs {m.group(1)!r} but the service reads {key!r}")
    if svc.get("restart", "no") != "no":
        error("flags-seed: a one-shot seed must not restart")


def check_flagd(services, svc):
    cmd = [unescape(c) for c in as_list(svc.get("command") or [])]
    try:
        sources = json.loads(cmd[cmd.index("--sources") + 1])
    except (ValueError, IndexError) as e:
        error(f"flagd: --sources missing or not JSON: {e}")
        return
    port = env_of(services["flagd-redis-sync"]).get("REDIS_SYNC_PORT", "8016")
    grpc = [s for s in sources if s.get("provider") == "grpc"]
    if not grpc:
        error("flagd: no source with provider grpc")
    for s in grpc:
        host, _, p = str(s.get("uri", "")).rpartition(":")
        if host != "flagd-redis-sync" or p != port:
            error(f"flagd: source uri {s.get('uri')!r} is not flagd-redis-sync:{port}")


if __name__ == "__main__":
    main()
    if errors:
        for e in errors:
            print(f"check-compose: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"check-compose: {sys.argv[1] if len(sys.argv) > 1 else 'compose/docker-compose.yml'}: ok")
