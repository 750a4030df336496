# Demo "web" workload: busybox httpd on 8080 serving a page that shows its version.
# Build context: examples/images/web/. Two tags that differ visibly:
#   docker build -f docker/demo-web.Dockerfile --build-arg VERSION=1.0 -t edgefleet-demo/web:1.0 examples/images/web
#   docker build -f docker/demo-web.Dockerfile --build-arg VERSION=2.0 --build-arg COLOR=#2da44e \
#     -t edgefleet-demo/web:2.0 examples/images/web
FROM edgefleet-demo/busybox:1.0
ARG VERSION=1.0
ARG COLOR=#1f6feb
ARG MESSAGE="deployed from Git by edgefleet"
COPY www/ /www/
RUN sed -e "s|@VERSION@|${VERSION}|g" -e "s|@COLOR@|${COLOR}|g" -e "s|@MESSAGE@|${MESSAGE}|g" \
        /www/index.html.in > /www/index.html \
 && rm /www/index.html.in \
 && echo "${VERSION}" > /www/version
LABEL org.opencontainers.image.title="edgefleet demo web" \
      org.opencontainers.image.version="${VERSION}"
USER 65534:65534
EXPOSE 8080
# httpd as PID 1 would ignore SIGTERM (no handler), making every stop take the full
# 10 s timeout: a shell with a trap is PID 1 and exits at once.
CMD ["/bin/sh", "-c", "trap 'exit 0' TERM INT; /bin/httpd -f -v -p 8080 -h /www & wait"]
