#!/bin/sh
# edgefleet demo sensor: prints a made-up temperature reading every INTERVAL seconds.
INTERVAL=${INTERVAL:-5}
SENSOR=${SENSOR_NAME:-temp-0}
echo "sensor ${SENSOR} $(cat /etc/sensor-version) starting, interval ${INTERVAL}s"
trap 'echo "sensor ${SENSOR} stopping"; exit 0' TERM INT
n=0
while :; do
  n=$((n + 1))
  # 20.0 .. 25.9 degrees from the busybox RNG, no floating point needed.
  r=$(od -An -N1 -tu1 /dev/urandom | tr -d ' ')
  echo "reading=${n} sensor=${SENSOR} temp=$((20 + r % 6)).$((r % 10))C"
  sleep "${INTERVAL}" &
  wait $!
done
