# edgefleet embedded MQTT broker (crate broker/), a static musl binary on scratch.
# Build context: target/docker/ as prepared by scripts/build-images.sh.
#   docker build -f docker/broker.Dockerfile -t edgefleet/broker:dev target/docker
# No CA certificates: this build has no TLS listener. No HEALTHCHECK: a scratch image has
# no shell or client to probe with (a `broker healthcheck` subcommand doing an MQTT
# CONNECT to 127.0.0.1 would make one possible).
FROM scratch
COPY rootfs/ /
COPY bin/broker /usr/local/bin/broker
ENV RUST_LOG=info
USER 65532:65532
EXPOSE 1883
ENTRYPOINT ["/usr/local/bin/broker"]
CMD ["--listen", "0.0.0.0:1883"]
