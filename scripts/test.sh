#!/usr/bin/env bash
# Runs the test tiers with node's test runner through tsx. Files are listed explicitly (node 20's --test
# does not expand quoted globs). Usage: scripts/test.sh [unit|native|e2e ...]   (default: all tiers)
set -euo pipefail
cd "$(dirname "$0")/.."
tiers=("$@")
[ ${#tiers[@]} -eq 0 ] && tiers=(unit native e2e)
files=()
for t in "${tiers[@]}"; do
  [ -d "test/$t" ] || continue
  while IFS= read -r f; do files+=("$f"); done < <(find "test/$t" -name '*.test.ts' | sort)
done
if [ ${#files[@]} -eq 0 ]; then echo "no test files found for: ${tiers[*]}" >&2; exit 1; fi
exec node --import tsx --test --test-concurrency=2 --test-reporter=spec "${files[@]}"
