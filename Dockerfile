# The demo image: sidecar-run is PID 1 and runs the bundled legacy app with the default
# plugins (admin /status, /metrics, /livez, /readyz). docs/how-to/container-entrypoint.md
#
#   docker build -t sidecar-run-demo .
#   docker run --rm --stop-timeout 30 -p 9901:9901 sidecar-run-demo
#   curl localhost:9901/status
#
# For your own app, keep the ENTRYPOINT and give the config and the command:
#   ENTRYPOINT ["sidecar-run", "--config", "/etc/sidecar-run/sidecar.toml", "--"]
#   CMD ["/app/legacy-app"]

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sidecar_runtime/ sidecar_runtime/
COPY plugins/ plugins/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin sidecar
# Not root: sidecar-run needs no privilege to supervise, signal and reap the app.
USER 10001:10001
WORKDIR /tmp

# 9901: the admin listener (GET /status, /metrics, /livez, /readyz, /healthz). The demo app
# itself listens on 127.0.0.1:8080 inside the container only.
EXPOSE 9901
# What `docker stop` sends to PID 1: sidecar-run's graceful stop. Keep SIGTERM; set stop.signal
# if the app wants another signal.
STOPSIGNAL SIGTERM
# For `docker ps` and Compose's `depends_on: condition: service_healthy` (Kubernetes ignores
# it and uses its own probes): healthy while /readyz answers 200.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9901/readyz', timeout=2).status != 200)"]

# Exec form, so sidecar-run itself is PID 1 and receives the signals.
ENTRYPOINT ["sidecar-run"]
CMD ["demo", "--port", "8080", "--admin", "0.0.0.0:9901"]
