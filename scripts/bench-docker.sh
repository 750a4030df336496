#!/usr/bin/env bash
# Real Docker: git commit → containers running with the image present, the LO polling Git
# every second (the e2e harness's site: our broker, lo, one en-agent, busybox images in a
# local registry). BENCH_RUNS switches (default 5). Needs Docker, busybox-static,
# docker-registry, git.
#
#   scripts/bench-docker.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# The harness runs target/release/{broker,lo,en-agent} next to the bench executable.
cargo build -q --release -p edgefleet-broker -p edgefleet-lo -p edgefleet-agent
mkdir -p target/bench-results
cargo bench -q -p edgefleet-bench --bench docker_commit | tee target/bench-results/docker-commit.json
