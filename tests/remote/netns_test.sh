#!/usr/bin/env bash
# A remote pool across a real network interface: the server in one network namespace, the
# client in another, joined by a veth pair with addresses of this test's own two hosts
# (10.231.0.1 and 10.231.0.2/30). UCX_TLS=tcp so that the bytes cross the veth (shared
# memory between the namespaces would not), and the client's veth must have received at
# least the model's bytes. Tokens must equal a local run's. Everything is removed on exit.
# Registered by tests/CMakeLists.txt only where `ip netns` works (root, iproute2).
set -euo pipefail
cli="$1"
tag="xlsh$$"
srv_ns="${tag}s" cli_ns="${tag}c"
dir=$(mktemp -d)
pool="shm://xlshare-netns-$$"
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  ip netns del "$srv_ns" 2>/dev/null || true
  ip netns del "$cli_ns" 2>/dev/null || true
  "$cli" pool rm "$pool" --force >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

ip netns add "$srv_ns"
ip netns add "$cli_ns"
ip link add "${tag}a" type veth peer name "${tag}b"
ip link set "${tag}a" netns "$srv_ns"
ip link set "${tag}b" netns "$cli_ns"
ip -n "$srv_ns" addr add 10.231.0.1/30 dev "${tag}a"
ip -n "$cli_ns" addr add 10.231.0.2/30 dev "${tag}b"
for ns in "$srv_ns" "$cli_ns"; do ip -n "$ns" link set lo up; done
ip -n "$srv_ns" link set "${tag}a" up
ip -n "$cli_ns" link set "${tag}b" up

head -c 32 /dev/urandom | base64 > "$dir/token"
chmod 600 "$dir/token"
"$cli" synth --dim 128 --layers 4 --heads 4 --kv-heads 2 --ffn 256 --vocab 512 --out "$dir/m.gguf" >/dev/null
"$cli" load "$dir/m.gguf" --pool "$pool" --name m >/dev/null
model_bytes=$(stat -c %s "$dir/m.gguf")
gen=(generate --model m --prompt-tokens 3,14,15,92,65 -n 12 --placement copy --cache 256K --preset none)
want=$("$cli" "${gen[@]}" --pool "$pool" | tail -n 1)

export UCX_TLS=tcp
timeout 120 ip netns exec "$srv_ns" "$cli" --token-file "$dir/token" pool serve "$pool" \
  --listen 10.231.0.1:0 --allow 10.231.0.2/32 > "$dir/server.out" 2> "$dir/server.err" &
server_pid=$!
for _ in $(seq 1 200); do
  grep -q '^serving pool ' "$dir/server.out" && break
  sleep 0.1
done
uri=$(sed -n 's/^serving pool .* as //p' "$dir/server.out")
[ -n "$uri" ] || { echo "the server did not start:"; cat "$dir/server.err"; exit 1; }
rx_before=$(ip netns exec "$cli_ns" cat "/sys/class/net/${tag}b/statistics/rx_bytes")
got=$(timeout 120 ip netns exec "$cli_ns" "$cli" --token-file "$dir/token" "${gen[@]}" --pool "$uri" | tail -n 1)
rx_after=$(ip netns exec "$cli_ns" cat "/sys/class/net/${tag}b/statistics/rx_bytes")
echo "local:  $want"
echo "remote: $got ($uri, $((rx_after - rx_before)) bytes received on the client's veth, model $model_bytes bytes)"
[ "$got" = "$want" ] || { echo "FAIL: the tokens differ"; exit 1; }
[ $((rx_after - rx_before)) -ge "$model_bytes" ] || { echo "FAIL: the weights did not cross the veth"; exit 1; }
echo "ok"
