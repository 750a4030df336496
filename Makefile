# edgefleet: build, run the demo site with Docker Compose, test.
#
#   make up       build every image (offline) and start broker, LO and three agents
#   make watch    follow the fleet's MQTT traffic (needs mosquitto_sub)
#   make ps       the containers the agents run
#   make logs     follow the services' logs
#   make down     stop everything, delete its volumes and the agent-created containers
#   make test     cargo test --workspace

SHELL := /bin/bash

# Compose v2 plugin if present, else docker-compose v1 (1.29 works too).
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
SITE ?= demo

.PHONY: help images up down logs ps watch test config

help:
	@sed -n '3,9p' Makefile | sed 's/^# *//'

images:
	./scripts/build-images.sh

up: images
	$(COMPOSE) up -d
	@echo
	@echo "edgefleet demo is up. Next:"
	@echo "  make watch                      # MQTT traffic: fleet/$(SITE)/#  (MQTT Explorer: user viewer, docker/demo-keys/viewer.password)"
	@echo "  make ps                         # containers the agents run"
	@echo "  curl -s 127.0.0.1:8080/readyz   # the LO; /metrics too"
	@echo "  edit examples/site/sites/$(SITE)/*.yaml, git commit, and watch the nodes change"

down:
	$(COMPOSE) down -v --remove-orphans
	./scripts/remove-managed.sh $(SITE)

logs:
	$(COMPOSE) logs -f --tail=100

ps:
	@docker ps -a --filter label=io.edgefleet.managed=true --filter label=io.edgefleet.site=$(SITE) \
	  --format 'table {{.Names}}\t{{.Image}}\t{{.Status}}\t{{.Ports}}'

# The demo broker requires logins (DEMO password, docker/demo-keys/README.md).
watch:
	mosquitto_sub -h 127.0.0.1 -p 1883 -u viewer -P "$$(cat docker/demo-keys/viewer.password)" -v -t 'fleet/$(SITE)/#'

config:
	$(COMPOSE) config

test:
	cargo test --workspace
