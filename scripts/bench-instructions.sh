#!/usr/bin/env bash
# Counts the instructions Tether executes per relayed tools/call, with
# valgrind's callgrind: the same binary, inputs and path give the same count
# whatever else the machine is doing, so two builds compare exactly where a
# shared machine's wall-clock numbers do not (a benchmark, never a test).
#
#   scripts/bench-instructions.sh [--calls N] [--auth] [--tracing on|down] [--shaping] [TETHER_BIN ...]
#
# Default binary: target/release/tether. For each binary and each path —
# federated /mcp and /u/demo/mcp in a legacy session, and /u/demo/mcp as a
# 2026-07-28 stateless client — it runs the gateway under callgrind in front
# of the demo upstream (not under callgrind), makes N calls (default 2000) on
# one kept-alive connection, and again with none; the difference divided by
# N is the cost of one call, start-up and shutdown left out. With --auth the
# gateway verifies an HS256 JWT the client sends on every request. With
# --tracing on the gateway traces every request (sample_ratio 1.0) and
# exports its spans to an OTLP sink started here (a loopback HTTP server
# that accepts every export); with --tracing down, to a port where nothing
# listens (every export fails, its spans are dropped and counted). With
# --shaping the demo's echo is shaped (called by an alias, its text a fixed
# argument) and its calls limited (a rate per principal for the upstream
# and the tool, and a concurrency cap, none of them ever reached).
set -euo pipefail
cd "$(dirname "$0")/.."
calls=2000
auth=""
tracing=""
shaping=""
bins=()
while (($#)); do
  case $1 in
    --calls) calls=$2; shift 2 ;;
    --auth) auth=1; shift ;;
    --tracing) tracing=$2; shift 2 ;;
    --shaping) shaping=1; shift ;;
    *) bins+=("$1"); shift ;;
  esac
done
((${#bins[@]})) || bins=(target/release/tether)
command -v valgrind >/dev/null || { echo "valgrind is needed (Debian package valgrind)" >&2; exit 1; }

client=$(mktemp)
sink=$(mktemp)
sink_pid=""
trap 'rm -f "$client" "$sink"; [[ -z $sink_pid ]] || kill "$sink_pid" 2>/dev/null' EXIT
otlp=""
case $tracing in
  "") ;;
  on)
    python3 -c '
import http.server
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
print(f"sink listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
' >"$sink" &
    sink_pid=$!
    for _ in $(seq 100); do grep -q listening "$sink" && break; sleep 0.1; done
    otlp=$(awk '{print $NF}' "$sink") ;;
  down) otlp="http://127.0.0.1:9" ;;
  *) echo "--tracing takes on or down" >&2; exit 2 ;;
esac
cat >"$client" <<'EOF'
import base64, hashlib, hmac, http.client, json, sys, time
port, n, path, era, auth, shaping = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
tool = "say" if shaping else "echo"
tool = "demo__" + tool if path == "/mcp" else tool
c = http.client.HTTPConnection("127.0.0.1", port)
h = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
if auth:
    b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=")
    signed = b64({"alg": "HS256", "typ": "JWT"}) + b"." + b64({"iss": "bench", "sub": "bench", "exp": int(time.time()) + 3600})
    mac = base64.urlsafe_b64encode(hmac.new(b"bench-secret", signed, hashlib.sha256).digest()).rstrip(b"=")
    h["authorization"] = "Bearer " + (signed + b"." + mac).decode()
params = {"name": tool, "arguments": {"text": "hello"}}
if era == "modern":
    h.update({"mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": tool})
    params["_meta"] = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                       "io.modelcontextprotocol/clientCapabilities": {},
                       "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}}
else:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
    c.request("POST", path, json.dumps(init), h)
    r = c.getresponse(); h["mcp-session-id"] = r.getheader("mcp-session-id"); r.read()
    h["mcp-protocol-version"] = "2025-11-25"
    c.request("POST", path, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), h)
    c.getresponse().read()
body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
for _ in range(n):
    c.request("POST", path, body, h)
    r = c.getresponse(); d = r.read()
    assert b"hello" in d, d
EOF

wait_line() { for _ in $(seq 300); do grep -q listening "$1" && return; sleep 0.2; done; echo "no listening line in $1" >&2; exit 1; }

# instructions BIN CALLS PATH ERA: the gateway's total instruction count.
instructions() {
  local bin=$1 n=$2 path=$3 era=$4 dir up gw port
  dir=$(mktemp -d)
  "$bin" demo-upstream --listen 127.0.0.1:0 --era "$([[ $era == modern ]] && echo dual || echo legacy)" >"$dir/up" 2>/dev/null &
  up=$!
  wait_line "$dir/up"
  printf '[store]\nurl = "memory"\n[[upstreams]]\nname = "demo"\nurl = "%s"\n' "$(awk '{print $NF}' "$dir/up")" >"$dir/tether.toml"
  [[ -n $shaping ]] && printf 'max_concurrent_calls = 64\nrate_limit = { per_minute = 1000000000 }\n[upstreams.shape.echo]\nalias = "say"\narguments = { text = "hello" }\nrate_limit = { per_minute = 1000000000 }\n' >>"$dir/tether.toml"
  [[ -n $auth ]] && printf '[auth]\nmode = "jwt"\n[auth.jwt]\nhs256_secret = "bench-secret"\nissuer = "bench"\n' >>"$dir/tether.toml"
  [[ -n $otlp ]] && printf '[telemetry]\notlp_endpoint = "%s"\nsample_ratio = 1.0\n' "$otlp" >>"$dir/tether.toml"
  TETHER_LOG=warn GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=2097152 valgrind --tool=callgrind --callgrind-out-file="$dir/cg" \
    "$bin" serve --config "$dir/tether.toml" --listen 127.0.0.1:0 >"$dir/gw" 2>/dev/null &
  gw=$!
  wait_line "$dir/gw"
  port=$(sed -nE 's#.*http://127.0.0.1:([0-9]+)/mcp#\1#p' "$dir/gw")
  python3 "$client" "$port" "$n" "$path" "$era" "$auth" "$shaping"
  kill -TERM "$gw"; wait "$gw" 2>/dev/null || true
  kill "$up"; wait "$up" 2>/dev/null || true
  sed -nE 's/^(summary|totals): ([0-9]+).*/\2/p' "$dir/cg" | head -1
  rm -rf "$dir"
}

printf '%-40s %-28s %12s\n' binary path "instr/call"
for bin in "${bins[@]}"; do
  for case in "/mcp legacy" "/u/demo/mcp legacy" "/u/demo/mcp modern"; do
    read -r path era <<<"$case"
    base=$(instructions "$bin" 0 "$path" "$era")
    total=$(instructions "$bin" "$calls" "$path" "$era")
    printf '%-40s %-28s %12d\n' "$bin" "$path ($era)" $(((total - base) / calls))
  done
done
