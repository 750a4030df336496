#!/usr/bin/env bash
# Fleet simulator runs: commit → every node converged, per fleet size and broker.
#
#   scripts/bench-fleet.sh [SIZES] [BROKERS] [RUNS]
#   scripts/bench-fleet.sh "100 1000 5000 10000" "rumqttd mosquitto" 5     # the defaults
#
# Each invocation of fleet-sim starts its own broker (our `broker` binary or Mosquitto),
# the `lo` binary on a temp Git repo, and N simulated agents; commits RUNS new image
# versions, timing each; measures the LO's idle CPU for 20 s; and exits by itself (every
# phase has a timeout). JSON results go to target/bench-results/fleet-<broker>-<n>.json.
#
# Needs: open files ≥ N + 500 in this shell (10,000 nodes: the default hard limit of
# 20,000 here is enough because broker, LO and agents are separate processes), and an
# ephemeral port range wider than N (cat /proc/sys/net/ipv4/ip_local_port_range).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${1:-"100 1000 5000 10000"}
BROKERS=${2:-"rumqttd mosquitto"}
RUNS=${3:-5}
OUT=target/bench-results
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"
cargo build -q --release -p edgefleet-bench --bin fleet-sim -p edgefleet-broker -p edgefleet-lo >&2
for n in $SIZES; do
  for b in $BROKERS; do
    timeout=$(( n >= 5000 ? 180 : 60 ))
    echo "== fleet-sim: $n nodes, $b, $RUNS runs" >&2
    set +e
    timeout 1200 target/release/fleet-sim --nodes "$n" --broker "$b" \
      --broker-bin target/release/broker --lo-bin target/release/lo \
      --runs "$RUNS" --reconnect 5 --timeout-s "$timeout" --idle-s 20 \
      >"$OUT/fleet-$b-$n.json" 2>"$OUT/fleet-$b-$n.log"
    rc=$?
    set -e
    grep '^fleet-sim:' "$OUT/fleet-$b-$n.log" >&2 || true
    echo "   exit $rc; $OUT/fleet-$b-$n.json" >&2
    sleep 5
  done
done
