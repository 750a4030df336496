# Base of the demo workload images: a static busybox and its applet links, nothing else.
# Build context: target/docker/ (scripts/build-images.sh copies a static busybox there).
FROM scratch
COPY rootfs/ /
COPY bin/busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["/bin/sh"]
