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
case $rounds in '' | *[!0-9]* | 0) echo "xlshare: error: ROUNDS must be a positive integer" >&2; exit 1 ;; esac
for round in $(seq 1 "$rounds"); do
  echo "== round $round $(date -u +%T)"
  for f in "$@"; do
    # A quantized file (its label lists the stored types) is measured in both modes.
    label=$("$bench" --model "$f" --threads 1 --quick --json | grep '"weights"')
    if echo "$label" | grep -qE '\(.*q[0-9]'; then
      "$bench" --model "$f" --threads 1,2 --repeats 5 --quantized-activations | grep '^| [^w-]' | sed 's/^/int8  /'
      "$bench" --model "$f" --threads 1,2 --repeats 5 | grep '^| [^w-]' | sed 's/^/exact /'
    else
      "$bench" --model "$f" --threads 1,2 --repeats 5 | grep '^| [^w-]' | sed 's/^/xlshare /'
    fi
    for t in 1 2; do
      # ggml logs each tensor it repacks on stderr: those lines are left out, errors are not.
      for step in "3 128" "1 512" "64 1"; do
        # shellcheck disable=SC2086
        "$anchor" "$f" "$t" $step 1 2> >(grep -v '^repack: ' >&2)
      done
    done
  done
done
