# Demo "sensor" workload: a shell loop printing a made-up reading every INTERVAL seconds.
# Build context: examples/images/sensor/.
FROM edgefleet-demo/busybox:1.0
ARG VERSION=1.0
COPY sensor.sh /bin/sensor
RUN echo "${VERSION}" > /etc/sensor-version
LABEL org.opencontainers.image.title="edgefleet demo sensor" \
      org.opencontainers.image.version="${VERSION}"
USER 65534:65534
CMD ["/bin/sensor"]
