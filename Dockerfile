# monitor — website availability monitor
# Config: mount yours at /etc/monitor/monitor.yaml. History: the volume /var/lib/monitor.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY monitor ./monitor
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/monitor --create-home monitor \
    && mkdir -p /etc/monitor
COPY config/monitor.yaml /etc/monitor/monitor.yaml

USER 10001
WORKDIR /var/lib/monitor
VOLUME ["/var/lib/monitor"]
EXPOSE 9321
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9321/healthz', timeout=4)"]
ENTRYPOINT ["monitor"]
CMD ["run", "--config", "/etc/monitor/monitor.yaml", "--listen", "0.0.0.0"]
