#!/usr/bin/env bash
# Decode through a remote pool against the same pool read locally, on the bench shape
# (dim 768, 12 layers, ffn 2048, vocab 32000; F32 unless told): one shm pool, served by
# `xlshare pool serve` on 127.0.0.1 over UCX's TCP transport and over its shared-memory
# transports (UCX_TLS=sm,tcp: TCP makes the connection, shared memory carries the reads),
# read by `xlshare generate` with the copy placement and a near cache of 1/4 of the model.
# Decode tok/s = 64 / (latency of 65 new tokens - latency of 1), prompt of 16 tokens, the
# median of REPEATS runs of each (a new process each run: attach is not counted). Every
# remote run must generate the local pool's tokens, or the script fails.
#
#   bench/remote_pool.sh [BUILD_DIR=build] [REPEATS=5] [PRESET=none] [DTYPE=f32]
# (DTYPE: any of `xlshare synth --dtype`, e.g. q4_k_m for llama.cpp's Q4_K_M mix)
set -euo pipefail
build="${1:-build}"
repeats="${2:-5}"
preset="${3:-none}"
dtype="${4:-f32}"
cli="$build/bin/xlshare"
dir=$(mktemp -d)
pool="shm://xlshare-remote-bench-$$"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  "$cli" pool rm "$pool" --force >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
"$cli" synth --dim 768 --layers 12 --heads 12 --kv-heads 12 --ffn 2048 --vocab 32000 \
  --context 1024 --dtype "$dtype" --out "$dir/bench.gguf" >/dev/null
"$cli" load "$dir/bench.gguf" --pool "$pool" --name bench >/dev/null
bytes=$(stat -c %s "$dir/bench.gguf")
cache=$((bytes / 4))
head -c 32 /dev/urandom | base64 > "$dir/token"
chmod 600 "$dir/token"
export XLSHARE_TOKEN_FILE="$dir/token"
prompt=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16

# median of decode tok/s over $repeats runs against pool $1
decode() {
  local uri="$1" rates=()
  for _ in $(seq 1 "$repeats"); do
    local l1 l65
    l1=$("$cli" generate --pool "$uri" --model bench --prompt-tokens $prompt -n 1 --placement copy \
      --cache "$cache" --preset "$preset" --json 2>/dev/null | sed 's/.*"latency_ms":\([0-9.]*\).*/\1/')
    local out
    out=$("$cli" generate --pool "$uri" --model bench --prompt-tokens $prompt -n 65 --placement copy \
      --cache "$cache" --preset "$preset" --json 2>/dev/null)
    l65=$(sed 's/.*"latency_ms":\([0-9.]*\).*/\1/' <<< "$out")
    local tokens
    tokens=$(sed 's/.*"tokens":\(\[[^]]*\]\).*/\1/' <<< "$out")
    if [ -z "$want_tokens" ]; then echo "$tokens" > "$dir/want"; fi
    if [ -n "$want_tokens" ] && [ "$tokens" != "$want_tokens" ]; then
      echo "tokens from $uri differ from the local pool's" >&2
      exit 1
    fi
    rates+=("$(awk -v a="$l1" -v b="$l65" 'BEGIN { printf "%.1f", 64000 / (b - a) }')")
  done
  printf '%s\n' "${rates[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

serve() {  # starts a server with UCX_TLS=$1; sets $server and $uri
  UCX_TLS="$1" "$cli" pool serve "$pool" --listen 127.0.0.1:0 > "$dir/server.out" 2>/dev/null &
  server=$!
  for _ in $(seq 1 200); do
    grep -q '^serving pool ' "$dir/server.out" && break
    sleep 0.1
  done
  uri=$(sed -n 's/^serving pool .* as //p' "$dir/server.out")
}
stop() { kill "$server"; wait "$server" 2>/dev/null || true; server=""; }

echo "bench shape $dtype, $((bytes >> 20)) MiB, copy placement, cache $((cache >> 20)) MiB, preset $preset, median of $repeats"
echo "| pool | decode tok/s |"
echo "|---|---|"
want_tokens=""
rate=$(decode "$pool")
echo "| local shm | $rate |"
want_tokens=$(cat "$dir/want")
serve tcp
rate=$(UCX_TLS=tcp decode "$uri")
echo "| ucx:// over TCP (loopback) | $rate |"
stop
serve sm,tcp
rate=$(UCX_TLS=sm,tcp decode "$uri")
echo "| ucx:// over shared memory (UCX_TLS=sm,tcp) | $rate |"
stop
echo "(every remote run generated the local pool's tokens)"
