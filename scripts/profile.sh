#!/usr/bin/env bash
# Profile the fleet under load: the fleet benchmark at its maximum rate while
# perf samples every CPU, folded into a flame graph (inferno) at
# docs/bench/flamegraph.svg. Needs perf (Debian: linux-perf) and root or
# kernel.perf_event_paranoid <= -1 for system-wide sampling.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "profile: perf is missing; install it with: apt-get install linux-perf" >&2; exit 1; }
if ! command -v inferno-collapse-perf >/dev/null; then
  echo "profile: installing inferno (flame graphs) with cargo install"
  cargo install --locked inferno
fi
out="$PWD/target/profile"
mkdir -p "$out"
BENCH_ONLY=fleet BENCH_PERF="$out/perf.data" make bench
perf script -i "$out/perf.data" 2>/dev/null | inferno-collapse-perf --all > "$out/folded.txt"
inferno-flamegraph --title "Payment Sessions fleet at its maximum rate (all CPUs)" < "$out/folded.txt" > docs/bench/flamegraph.svg
# The share of samples per process, the table docs/performance.md quotes.
awk -F';' '{ split($NF, a, " "); n = a[length(a)]; p = $1; sub(/-[0-9]+(\/[0-9]+)?$/, "", p); t[p] += n; all += n }
  END { for (p in t) printf "%6.1f %%  %s\n", 100 * t[p] / all, p }' "$out/folded.txt" | sort -rn | head -15
echo "profile: docs/bench/flamegraph.svg"
