# edgefleet edge-node agent (crate en-agent/), a static musl binary on scratch.
# Build context: target/docker/ as prepared by scripts/build-images.sh.
#   docker build -f docker/en-agent.Dockerfile -t edgefleet/en-agent:dev target/docker
#
# Runs as root: it drives the Docker engine through /var/run/docker.sock, which is
# root:docker 0660 on most hosts, and whoever holds that socket is root on the host anyway.
# To run it unprivileged, set `user: "65532:65532"` and `group_add: ["<gid of docker.sock>"]`
# in compose (`stat -c %g /var/run/docker.sock`); the state volume must then be writable by
# 65532 (the directory below is created owned by it).
# No CA certificates: add them (COPY a ca-certificates.crt to /etc/ssl/certs/) only for
# mqtts:// brokers with a public CA; a private CA is passed to the agent explicitly.
FROM scratch
COPY rootfs/ /
COPY --chown=65532:65532 state/ /var/lib/edgefleet/
COPY bin/en-agent /usr/local/bin/en-agent
ENV HOME=/var/lib/edgefleet \
    RUST_LOG=info \
    EN_STATE_DIR=/var/lib/edgefleet \
    EN_DOCKER_HOST=unix:///var/run/docker.sock
WORKDIR /var/lib/edgefleet
# `en-agent healthcheck` checks what the agent needs (config, state dir readable, Docker
# answering /_ping) and writes nothing: a health probe must not wear out a device's flash.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/en-agent", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/en-agent"]
CMD ["run"]
