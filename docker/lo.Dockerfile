# edgefleet local orchestrator (crate lo/), a static musl binary on scratch.
# Build context: target/docker/ as prepared by scripts/build-images.sh.
#   docker build -f docker/lo.Dockerfile -t edgefleet/lo:dev target/docker
# Built with `vendored-tls` (libgit2 with https and ssh, static OpenSSL). The image carries no
# CA bundle: for an https remote mount one and set SSL_CERT_FILE (e.g.
# -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro); for ssh mount
# the key and $HOME/.ssh/known_hosts.
# State (generation counters, the Git mirror, audit log) lives in /var/lib/edgefleet-lo:
# mount a volume there (no VOLUME line: one-shot `lo validate` runs would each leave an
# anonymous volume behind). Runs as uid 65532; the state dir is created owned by it, so a new
# named volume inherits that ownership.
FROM scratch
COPY rootfs/ /
COPY --chown=65532:65532 state/ /var/lib/edgefleet-lo/
COPY bin/lo /usr/local/bin/lo
ENV HOME=/var/lib/edgefleet-lo \
    RUST_LOG=info \
    LO_STATE_DIR=/var/lib/edgefleet-lo \
    LO_HTTP_LISTEN=0.0.0.0:8080
USER 65532:65532
WORKDIR /var/lib/edgefleet-lo
# HTTP: /healthz /readyz /metrics
EXPOSE 8080
# `lo healthcheck` GETs /readyz on the configured HTTP address (no shell or curl needed).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/lo", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/lo"]
CMD ["run"]
