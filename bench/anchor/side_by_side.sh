#!/usr/bin/env bash
# xlshare_bench_model and the ggml anchor on the same files, alternating, ROUNDS times.
#   side_by_side.sh ANCHOR BENCH_MODEL ROUNDS FILE.gguf...
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 ANCHOR BENCH_MODEL ROUNDS FILE.gguf..." >&2
  exit 1
fi
anchor=$1 bench=$2 rounds=$3
shift 3
case $rounds in '' | *[!0-9]*) echo "xlshare: error: ROUNDS must be a positive integer" >&2; exit 1 ;; esac
for round in $(seq 1 "$rounds"); do
  echo "== round $round $(date -u +%T)"
  for f in "$@"; do
    if "$bench" --model "$f" --threads 1 --quick --json 2>/dev/null | grep -qE '"weights": ".*\(.*q[0-9]'; then
      "$bench" --model "$f" --threads 1,2 --repeats 5 --quantized-activations | grep '^| [^w-]' | sed 's/^/int8  /'
      "$bench" --model "$f" --threads 1,2 --repeats 5 | grep '^| [^w-]' | sed 's/^/exact /'
    else
      "$bench" --model "$f" --threads 1,2 --repeats 5 | grep '^| [^w-]' | sed 's/^/xlshare /'
    fi
    for t in 1 2; do
      "$anchor" "$f" "$t" 3 128 1 2>/dev/null
      "$anchor" "$f" "$t" 1 512 1 2>/dev/null
      "$anchor" "$f" "$t" 64 1 1 2>/dev/null
    done
  done
done
