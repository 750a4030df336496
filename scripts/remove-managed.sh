#!/usr/bin/env bash
# Remove what the demo's EN agents created on this Docker engine: containers (then networks
# and volumes) labelled io.edgefleet.managed=true and io.edgefleet.site=<site>.
# Run it AFTER the agents are stopped (`docker compose down`), or they recreate everything.
#
#   scripts/remove-managed.sh [site]      # default site: demo; "--all" = every site
set -euo pipefail

site=${1:-demo}
filters=(--filter label=io.edgefleet.managed=true)
[ "$site" = "--all" ] || filters+=(--filter "label=io.edgefleet.site=$site")

containers=$(docker ps -aq "${filters[@]}")
if [ -n "$containers" ]; then
  echo "removing managed containers: $(docker inspect -f '{{.Name}}' $containers | tr -d / | tr '\n' ' ')"
  # shellcheck disable=SC2086
  docker rm -f -v $containers >/dev/null
fi
networks=$(docker network ls -q "${filters[@]}")
if [ -n "$networks" ]; then
  echo "removing managed networks: $(docker network inspect -f '{{.Name}}' $networks | tr '\n' ' ')"
  # shellcheck disable=SC2086
  docker network rm $networks >/dev/null
fi
volumes=$(docker volume ls -q "${filters[@]}")
if [ -n "$volumes" ]; then
  echo "removing managed volumes: $(echo $volumes)"
  # shellcheck disable=SC2086
  docker volume rm $volumes >/dev/null
fi
echo "no edgefleet-managed containers, networks or volumes left for site ${site#--}"
