# edgefleet embedded MQTT broker (crate broker/), a static musl binary on scratch.
# Build context: target/docker/ as prepared by scripts/build-images.sh.
#   docker build -f docker/broker.Dockerfile -t edgefleet/broker:dev target/docker
# No CA certificates: this build has no TLS listener. The image has no shell: the healthcheck
# is the binary's own `broker healthcheck` (an MQTT CONNECT to 127.0.0.1, CONNACK expected).
FROM scratch
COPY rootfs/ /
COPY bin/broker /usr/local/bin/broker
ENV RUST_LOG=info
USER 65532:65532
EXPOSE 1883
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/broker", "healthcheck", "--addr", "127.0.0.1:1883"]
ENTRYPOINT ["/usr/local/bin/broker"]
CMD ["--listen", "0.0.0.0:1883"]
