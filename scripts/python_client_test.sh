#!/usr/bin/env bash
# Runs examples/python_client.py (grpcio, stubs generated from the proto at run time) against
# a real `latentdb serve` on a free loopback port, with an API key. Exits non-zero on failure.
#
#   scripts/python_client_test.sh [path/to/latentdb]
#
# Without an argument it builds the CLI (cargo build -p latentdb-cli) and uses
# ${CARGO_TARGET_DIR:-target}/debug/latentdb. Installs grpcio and grpcio-tools with pip if
# they are missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bin="${1:-}"
if [[ -z "$bin" ]]; then
    cargo build --quiet -p latentdb-cli ${CARGO_OFFLINE:+--offline}
    bin="${CARGO_TARGET_DIR:-$root/target}/debug/latentdb"
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import grpc, grpc_tools' 2>/dev/null; then
    "$python" -m pip install --quiet grpcio grpcio-tools
fi

data="$(mktemp -d)"
log="$data.log"
key="python-test-key-$RANDOM$RANDOM"
port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
addr="127.0.0.1:$port"

server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$data" "$log"
}
trap cleanup EXIT

LATENTDB_API_KEY="$key" "$bin" serve --data "$data/db" --addr "$addr" >"$log" 2>&1 &
server_pid=$!

# Wait until it listens (the first line of its output names the address).
for _ in $(seq 1 100); do
    grep -q "serving on" "$log" 2>/dev/null && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$log"; echo "server exited early" >&2; exit 1; }
    sleep 0.1
done

"$python" examples/python_client.py --addr "$addr" --api-key "$key"

# SIGTERM: the server finishes, flushes and exits 0.
kill -TERM "$server_pid"
status=0
wait "$server_pid" || status=$?
server_pid=""
if [[ "$status" -ne 0 ]]; then
    cat "$log"
    echo "server exited with $status after SIGTERM" >&2
    exit 1
fi
echo "python client test passed (server exited 0 on SIGTERM)"
