#!/usr/bin/env python3
"""check-compose.py [FILE]: static checks of compose/docker-compose.yml (`make compose-check`).

Needs no Docker engine and no compose plugin: only python3 and PyYAML (Debian package
python3-yaml). Checks what `docker compose config` would reject plus what this set-up
relies on: `$` escaping, service references, paths, keyspace-notification flags, the Redis
key, and that flagd's sources point at the service's gRPC port. For the optional
`monitoring` profile: Prometheus scrapes the service's management port and loads
well-formed alert rules; Grafana's data source points at Prometheus and its dashboard
provider finds the mounted dashboard JSON, whose panels all have queries.
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
    check_monitoring(services, base)
    check_redis(services["redis"])
    key = check_service(services, services["flagd-redis-sync"])
    check_seed(services["flags-seed"], key)
    check_flagd(services, services["flagd"])


def mounts(svc, base):
    """Container path -> host path of the service's bind mounts."""
    out = {}
    for vol in svc.get("volumes") or []:
        parts = str(vol).split(":")
        if len(parts) >= 2 and parts[0].startswith((".", "/")):
            out[parts[1]] = (base / parts[0]).resolve()
    return out


def mounted(name, svc_mounts, container_path):
    """The host file mounted at container_path (or inside a mounted directory)."""
    for target, host in svc_mounts.items():
        if container_path == target:
            return host
        if container_path.startswith(target.rstrip("/") + "/") and host.is_dir():
            return host / container_path[len(target.rstrip("/")) + 1 :]
    error(f"{name}: nothing is mounted at {container_path}")
    return None


def load(name, path, parse):
    try:
        return parse(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as e:
        error(f"{name}: {path}: {e}")
        return None


DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def check_monitoring(services, base):
    """The optional `monitoring` profile: Prometheus scraping the service with the alert
    rules of docs/monitoring, Grafana provisioned with the data source and the dashboard."""
    monitoring = [n for n in ("prometheus", "grafana") if n in services]
    if not monitoring:
        return
    for name in monitoring:
        if "monitoring" not in (services[name].get("profiles") or []):
            error(f"{name}: not in the monitoring profile (profiles: [\"monitoring\"])")
    mgmt = env_of(services["flagd-redis-sync"]).get("REDIS_SYNC_MANAGEMENT_PORT", "8014")
    prom_port = "9090"
    if "prometheus" in services:
        prom = services["prometheus"]
        m = mounts(prom, base)
        cmd = as_list(prom.get("command") or [])
        conf_path = next(
            (c.split("=", 1)[1] for c in cmd if str(c).startswith("--config.file=")),
            "/etc/prometheus/prometheus.yml",
        )
        host = mounted("prometheus", m, conf_path)
        conf = load("prometheus", host, yaml.safe_load) if host and host.exists() else None
        if host and not host.exists():
            error(f"prometheus: {host} does not exist")
        if conf:
            targets = [
                t
                for job in conf.get("scrape_configs") or []
                for sc in job.get("static_configs") or []
                for t in sc.get("targets") or []
            ]
            if f"flagd-redis-sync:{mgmt}" not in targets:
                error(f"prometheus: no scrape target flagd-redis-sync:{mgmt} (found {targets})")
            rule_files = conf.get("rule_files") or []
            if not rule_files:
                error("prometheus: no rule_files")
            for rf in rule_files:
                rhost = mounted("prometheus", m, rf)
                if rhost is None:
                    continue
                if not rhost.exists():
                    error(f"prometheus: rule file {rhost} does not exist")
                    continue
                check_rules(rhost, load("prometheus", rhost, yaml.safe_load))
    if "grafana" in services:
        graf = services["grafana"]
        m = mounts(graf, base)
        sources = [(t, h) for t, h in m.items() if t.startswith("/etc/grafana/provisioning/datasources/")]
        boards = [(t, h) for t, h in m.items() if t.startswith("/etc/grafana/provisioning/dashboards/")]
        if not sources:
            error("grafana: no data source provisioning mounted")
        if not boards:
            error("grafana: no dashboard provisioning mounted")
        uids = set()
        for _, h in sources:
            conf = load("grafana", h, yaml.safe_load) or {}
            for ds in conf.get("datasources") or []:
                uids.add(ds.get("uid"))
                u = urlparse(str(ds.get("url", "")))
                if ds.get("type") == "prometheus" and (
                    u.hostname not in services or str(u.port) != prom_port
                ):
                    error(f"grafana: data source url {ds.get('url')!r} is not a prometheus service on {prom_port}")
        for _, h in boards:
            conf = load("grafana", h, yaml.safe_load) or {}
            for prov in conf.get("providers") or []:
                path = (prov.get("options") or {}).get("path")
                jsons = [(t, hh) for t, hh in m.items() if path and t.startswith(path.rstrip("/") + "/") and t.endswith(".json")]
                if not jsons:
                    error(f"grafana: no dashboard JSON mounted under {path}")
                for _, hh in jsons:
                    check_dashboard(hh, load("grafana", hh, json.loads))


def check_rules(path, doc):
    if not isinstance(doc, dict) or not doc.get("groups"):
        error(f"{path}: no rule groups")
        return
    names = set()
    for group in doc["groups"]:
        for rule in group.get("rules") or []:
            name = rule.get("alert") or rule.get("record")
            if not name:
                error(f"{path}: a rule in {group.get('name')} has neither alert nor record")
                continue
            if name in names:
                error(f"{path}: alert {name} defined twice")
            names.add(name)
            if not str(rule.get("expr") or "").strip():
                error(f"{path}: {name}: no expr")
            if "for" in rule and not DURATION.match(str(rule["for"])):
                error(f"{path}: {name}: for {rule['for']!r} is not a duration")
            if rule.get("alert"):
                if "severity" not in (rule.get("labels") or {}):
                    error(f"{path}: {name}: no severity label")
                if "summary" not in (rule.get("annotations") or {}):
                    error(f"{path}: {name}: no summary annotation")


def check_dashboard(path, dash):
    if not isinstance(dash, dict):
        return
    for field in ("uid", "title", "panels"):
        if not dash.get(field):
            error(f"{path}: no {field}")
    variables = {v.get("name") for v in (dash.get("templating") or {}).get("list") or []}
    for panel in dash.get("panels") or []:
        if panel.get("type") == "row":
            continue
        title = panel.get("title")
        targets = panel.get("targets") or []
        if not targets:
            error(f"{path}: panel {title!r} has no query")
        for t in targets:
            if not str(t.get("expr") or "").strip():
                error(f"{path}: panel {title!r}: a target without expr")
            uid = str((t.get("datasource") or panel.get("datasource") or {}).get("uid", ""))
            var = uid.strip("${}")
            if uid.startswith("$") and var not in variables:
                error(f"{path}: panel {title!r} uses data source variable {uid} that is not defined")


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
