#!/usr/bin/env bash
# LO site plan for 10,000 nodes × 20 deployments (criterion): load/validate, render, plan,
# render+plan ("site_plan"), serialising every desired document.
#
#   scripts/bench-lo-plan.sh              # the figures (release profile, as shipped)
#   scripts/bench-lo-plan.sh --profile    # also a perf profile of site_plan (symbols kept)
#
# BENCH_NODES / BENCH_DEPLOYMENTS change the size. Criterion prints [low median high] of
# 10 samples per function; the report is in target/criterion/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p edgefleet-bench --bench lo_plan 2>&1 | grep -E '^site:|time:|^lo_'
if [ "${1:-}" = "--profile" ]; then
  command -v perf >/dev/null || { echo "perf not installed (apt-get install linux-perf)" >&2; exit 1; }
  # Same optimisation level as shipped, but symbols kept so perf can name functions.
  export CARGO_PROFILE_BENCH_STRIP=none CARGO_PROFILE_BENCH_DEBUG=line-tables-only
  cargo bench -p edgefleet-bench --bench lo_plan --no-run 2>&1 | tail -1
  exe=$(ls -t target/release/deps/lo_plan-* | grep -v '\.d$' | head -1)
  mkdir -p target/bench-results
  perf record -g -o target/bench-results/lo_plan.perf.data -- \
    "$exe" --bench --profile-time 10 'site_plan' >/dev/null 2>&1
  perf report -i target/bench-results/lo_plan.perf.data --no-children --percent-limit 1.5 \
    --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -40
fi
