# Demo "cache" workload: a stand-in dependency (busybox httpd on 9000) with a healthcheck.
# Build context: examples/images/cache/.
FROM edgefleet-demo/busybox:1.0
COPY www/ /www/
LABEL org.opencontainers.image.title="edgefleet demo cache" \
      org.opencontainers.image.version="1.0"
USER 65534:65534
EXPOSE 9000
HEALTHCHECK --interval=5s --timeout=2s --start-period=2s --retries=3 \
  CMD ["/bin/busybox", "wget", "-q", "-O-", "http://127.0.0.1:9000/health"]
# httpd as PID 1 would ignore SIGTERM (no handler), making every stop take the full
# 10 s timeout: a shell with a trap is PID 1 and exits at once.
CMD ["/bin/sh", "-c", "trap 'exit 0' TERM INT; /bin/httpd -f -p 9000 -h /www & wait"]
