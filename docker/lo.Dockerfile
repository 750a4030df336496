# edgefleet local orchestrator (crate lo/), a static musl binary on scratch.
# Build context: target/docker/ as prepared by scripts/build-images.sh.
#   docker build -f docker/lo.Dockerfile -t edgefleet/lo:dev target/docker
# The static build has no OpenSSL (libgit2 without https/ssh, see scripts/build-images.sh):
# it reads local repositories (a bind mount, file://) only, so no CA certificates either.
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
ENTRYPOINT ["/usr/local/bin/lo"]
CMD ["run"]
