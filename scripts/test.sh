#!/usr/bin/env bash
# The whole test suite: every Rust test (unit, store conformance on SQLite — and PostgreSQL when
# HERALD_TEST_DATABASE_URL is set —, API over real sockets, providers against the sandbox), then
# the third-party client tests (official Twilio helper library, independent APNs/FCM clients)
# against a real `herald serve` and `herald sandbox`.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/herald-target}"

echo "== Rust tests"
cargo test --workspace --all-targets

echo "== Client tests"
cargo build --bin herald
export HERALD_BIN="$CARGO_TARGET_DIR/debug/herald"
venv="$CARGO_TARGET_DIR/venv-clients"
if [ ! -x "$venv/bin/pytest" ] || [ tests/clients/twilio/requirements.txt -nt "$venv/.installed" ] \
    || [ tests/clients/sandbox/requirements.txt -nt "$venv/.installed" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    -r tests/clients/twilio/requirements.txt -r tests/clients/sandbox/requirements.txt
  touch "$venv/.installed"
fi

# A real server on a free port with a fresh data dir; the Twilio test uses its bootstrap account.
data_dir="$(mktemp -d)"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
HERALD_LOG=warn "$HERALD_BIN" serve --listen "127.0.0.1:$port" --data-dir "$data_dir" \
  --database-url "sqlite://$data_dir/herald.db" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$data_dir"' EXIT
for _ in $(seq 1 100); do
  [ -f "$data_dir/bootstrap-account.json" ] && curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break
  sleep 0.1
done
export HERALD_BASE_URL="http://127.0.0.1:$port"
HERALD_ACCOUNT_SID="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["accountSid"])' "$data_dir/bootstrap-account.json")"
HERALD_AUTH_TOKEN="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["authToken"])' "$data_dir/bootstrap-account.json")"
export HERALD_ACCOUNT_SID HERALD_AUTH_TOKEN
"$venv/bin/pytest" -q tests/clients
