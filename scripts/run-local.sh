#!/usr/bin/env bash
# run-local.sh (`make run`): a throw-away redis-server seeded with an example flag
# document, and flagd-redis-sync serving it in the foreground. Ctrl-C stops both.
#
# Environment (all optional):
#   FLAGS_FILE                  document to seed (default docs/examples/flags.json)
#   REDIS_SYNC_PORT             gRPC sync port (default 8016)
#   REDIS_SYNC_MANAGEMENT_PORT  management HTTP port (default 8014)
#   REDIS_PORT                  port of the throw-away redis-server (default: a free one)
#   CARGO_PROFILE               release (default) or dev
set -euo pipefail

cd "$(dirname "$0")/.."
FLAGS_FILE=${FLAGS_FILE:-docs/examples/flags.json}
GRPC_PORT=${REDIS_SYNC_PORT:-8016}
MGMT_PORT=${REDIS_SYNC_MANAGEMENT_PORT:-8014}
CARGO_PROFILE=${CARGO_PROFILE:-release}
KEY=flags

scripts/ensure-redis.sh

# A free TCP port on 127.0.0.1 (never 6379, so a system Redis is left alone).
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        local p
        while :; do
            p=$((20000 + RANDOM % 20000))
            (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
        done
    fi
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/flagd-redis-sync.XXXXXX")
REDIS_PID=
cleanup() {
    if [ -n "$REDIS_PID" ]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# redis-server may lose a race for the probed port: try a few.
for attempt in 1 2 3 4 5; do
    PORT=${REDIS_PORT:-$(free_port)}
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --logfile "$WORK/redis.log" --daemonize no &
    REDIS_PID=$!
    for _ in $(seq 100); do
        if [ "$(redis-cli -p "$PORT" ping 2>/dev/null)" = PONG ]; then
            break 2
        fi
        kill -0 "$REDIS_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
    REDIS_PID=
    if [ -n "${REDIS_PORT:-}" ] || [ "$attempt" -eq 5 ]; then
        echo "run-local: redis-server did not start on port $PORT:" >&2
        cat "$WORK/redis.log" >&2 || true
        exit 1
    fi
done

# Seed from a copy in the temp dir, so edits for experiments do not touch the repository.
cp "$FLAGS_FILE" "$WORK/flags.json"
redis-cli -p "$PORT" -x SET "$KEY" <"$WORK/flags.json" >/dev/null
echo "run-local: redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$PORT (pid $REDIS_PID, data in $WORK)"
echo "run-local: key '$KEY' seeded with $FLAGS_FILE"

if [ "$CARGO_PROFILE" = release ]; then
    PROFILE_ARGS=(--release)
else
    PROFILE_ARGS=(--profile "$CARGO_PROFILE")
fi
echo "run-local: building flagd-redis-sync ($CARGO_PROFILE)"
cargo build -q "${PROFILE_ARGS[@]}" --bin flagd-redis-sync

URI="redis://127.0.0.1:$PORT/0?key=$KEY"
cat <<MSG

────────────────────────────────────────────────────────────────────────────
 flagd-redis-sync: gRPC sync on 127.0.0.1:$GRPC_PORT, management on 127.0.0.1:$MGMT_PORT
 Redis:            $URI

 Change a flag (edit the copy, then store it; every client gets it at once):
   \$EDITOR $WORK/flags.json
   redis-cli -p $PORT -x SET $KEY < $WORK/flags.json

 Or replace the whole document in one command:
   redis-cli -p $PORT SET $KEY '{"flags":{"new-checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}}'

 Check a document before storing it:
   cargo run -q -- validate $WORK/flags.json

 Status:  curl -s http://127.0.0.1:$MGMT_PORT/readyz
 Metrics: curl -s http://127.0.0.1:$MGMT_PORT/metrics

 Connect flagd (it listens on 8014 and 8016 itself, so move those on one host):
   flagd start --management-port 8024 --ofrep-port 8026 \\
     --sources='[{"uri":"127.0.0.1:$GRPC_PORT","provider":"grpc"}]'
 Or an in-process OpenFeature provider:
   FLAGD_RESOLVER=in-process FLAGD_HOST=127.0.0.1 FLAGD_PORT=$GRPC_PORT

 Ctrl-C stops the service and the throw-away Redis.
────────────────────────────────────────────────────────────────────────────

MSG

# Not exec: the EXIT trap must still stop redis-server when the service ends.
cargo run -q "${PROFILE_ARGS[@]}" --bin flagd-redis-sync -- \
    --redis-uri "$URI" \
    --redis-sync-port "$GRPC_PORT" \
    --management-port "$MGMT_PORT"
