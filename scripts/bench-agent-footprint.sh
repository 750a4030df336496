#!/usr/bin/env bash
# EN agent footprint on the real Docker engine: stripped static binary size, idle RSS/PSS,
# idle CPU, disk writes while idle, bytes per heartbeat.
#
#   scripts/bench-agent-footprint.sh [IDLE_SECONDS]     # default 600 (the 10-minute figure)
#
# A temp site: our broker, the LO (polling a temp Git repo), and the static musl en-agent
# running a 3-container desired state (busybox FROM scratch images, `sleep`). Once the node
# reports converged, the agent is left alone for 30 s, then measured over IDLE_SECONDS:
# CPU (utime+stime from /proc/<pid>/stat), storage writes (/proc/<pid>/io write_bytes),
# and at the end VmRSS / VmHWM (/proc/<pid>/status) and Pss (/proc/<pid>/smaps_rollup).
# Prints one JSON document on stdout; cleans up its containers, images and processes.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${1:-600}
SITE="fp$$"
TAG="edgefleet-bench/busybox:fp"
TARGET=x86_64-unknown-linux-musl

log() { printf 'footprint: %s\n' "$*" >&2; }

cargo build -q --release --target "$TARGET" -p edgefleet-agent >&2
cargo build -q --release -p edgefleet-broker -p edgefleet-lo >&2
AGENT="target/$TARGET/release/en-agent"
SIZE=$(stat -c %s "$AGENT")
FILE=$(file -b "$AGENT" | cut -d, -f1-5)
log "binary $AGENT: $SIZE bytes ($FILE)"

WORK=$(mktemp -d /tmp/bench-footprint.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  scripts/remove-managed.sh "$SITE" >/dev/null 2>&1 || true
  docker rmi -f "$TAG" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# A tiny image: busybox-static FROM scratch.
mkdir -p "$WORK/img"
cp "$(command -v busybox)" "$WORK/img/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\nCMD ["sleep", "86400"]\n' >"$WORK/img/Dockerfile"
docker build -q -t "$TAG" "$WORK/img" >/dev/null

# The site: one node, three components.
REPO="$WORK/repo"
mkdir -p "$REPO/sites/$SITE"
git -C "$REPO" init -q -b main
cat >"$REPO/sites/$SITE/site.yaml" <<EOF
apiVersion: edgefleet.io/v1
kind: Site
metadata:
  name: $SITE
EOF
cat >"$REPO/sites/$SITE/nodes.yaml" <<EOF
apiVersion: edgefleet.io/v1
kind: Node
metadata:
  name: n1
EOF
{
  printf 'apiVersion: edgefleet.io/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  components:\n'
  for c in a b c; do
    printf '    - name: %s\n      image: %s\n      command: ["sleep", "86400"]\n' "$c" "$TAG"
  done
} >"$REPO/sites/$SITE/app.yaml"
git -C "$REPO" add -A
git -C "$REPO" -c user.name=bench -c user.email=bench@edgefleet.invalid commit -qm footprint

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
HTTP=$(free_port)
target/release/broker --listen "127.0.0.1:$PORT" >"$WORK/broker.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
target/release/lo run --site "$SITE" --repo "file://$REPO" --broker "mqtt://127.0.0.1:$PORT" \
  --state-dir "$WORK/lo" --http-listen "127.0.0.1:$HTTP" >"$WORK/lo.log" 2>&1 &
PIDS+=($!)
mkdir -p "$WORK/agent"
RUST_LOG=warn "$AGENT" run --site "$SITE" --node n1 --broker "mqtt://127.0.0.1:$PORT" \
  --state-dir "$WORK/agent" >"$WORK/agent.log" 2>&1 &
APID=$!
PIDS+=($APID)
log "agent pid $APID; waiting for convergence"

STATUS="fleet/$SITE/nodes/n1/status"
for i in $(seq 120); do
  s=$(mosquitto_sub -p "$PORT" -t "$STATUS" -C 1 -W 2 2>/dev/null || true)
  if echo "$s" | grep -q '"converged":true'; then break; fi
  [ "$i" = 120 ] && { log "not converged after 60 s: $s"; exit 1; }
  sleep 0.5
done
RUNNING=$(docker ps -q --filter "label=io.edgefleet.site=$SITE" | wc -l)
log "converged, $RUNNING containers running; settling 30 s"
sleep 30

cpu_ticks() { awk '{print $14+$15}' "/proc/$APID/stat"; }
wbytes() { awk '/^write_bytes/{print $2}' "/proc/$APID/io"; }
wchar() { awk '/^wchar/{print $2}' "/proc/$APID/io"; }
TCK=$(getconf CLK_TCK)
c0=$(cpu_ticks); w0=$(wbytes); ch0=$(wchar); t0=$(date +%s.%N)
touch "$WORK/mark"
# A heartbeat, as it goes over the wire (payload; the PUBLISH adds a 2-byte fixed header,
# 2 + topic length, and a 2-byte packet id at QoS 1).
HB_TOPIC="fleet/$SITE/nodes/n1/heartbeat"
HB=$(mosquitto_sub -p "$PORT" -t "$HB_TOPIC" -C 1 -W 30)
HB_BYTES=$(printf '%s' "$HB" | wc -c)
HB_PACKET=$((HB_BYTES + 2 + 2 + ${#HB_TOPIC} + 2))
RSS_SERIES=()
remaining=$IDLE
while [ "$remaining" -gt 0 ]; do
  step=$((remaining < 60 ? remaining : 60))
  sleep "$step"
  remaining=$((remaining - step))
  RSS_SERIES+=("$(awk '/^VmRSS/{print $2}' "/proc/$APID/status")")
done
t1=$(date +%s.%N); c1=$(cpu_ticks); w1=$(wbytes); ch1=$(wchar)
RSS=$(awk '/^VmRSS/{print $2}' "/proc/$APID/status")
HWM=$(awk '/^VmHWM/{print $2}' "/proc/$APID/status")
PSS=$(awk '/^Pss:/{print $2}' "/proc/$APID/smaps_rollup")
THREADS=$(awk '/^Threads/{print $2}' "/proc/$APID/status")
CHANGED=$(find "$WORK/agent" -newer "$WORK/mark" -type f | wc -l)
CPU_PCT=$(awk -v a="$c0" -v b="$c1" -v t="$TCK" -v s="$t0" -v e="$t1" 'BEGIN{printf "%.4f", (b-a)/t/(e-s)*100}')
cat <<EOF
{
  "tool": "bench-agent-footprint",
  "binary": "$AGENT",
  "binary_bytes": $SIZE,
  "binary_mib": $(awk -v s="$SIZE" 'BEGIN{printf "%.2f", s/1048576}'),
  "binary_file": "$FILE",
  "containers": $RUNNING,
  "idle_seconds": $IDLE,
  "rss_kib": $RSS,
  "rss_kib_every_minute": [$(IFS=,; echo "${RSS_SERIES[*]}")],
  "peak_rss_kib": $HWM,
  "pss_kib": $PSS,
  "threads": $THREADS,
  "idle_cpu_pct": $CPU_PCT,
  "idle_write_bytes": $((w1 - w0)),
  "idle_wchar_bytes": $((ch1 - ch0)),
  "state_files_changed_while_idle": $CHANGED,
  "heartbeat_payload_bytes": $HB_BYTES,
  "heartbeat_mqtt_packet_bytes": $HB_PACKET,
  "heartbeat_example": $HB
}
EOF
