# monitor — website availability monitor
# Config: mount yours at /etc/monitor/monitor.yaml. History: the volume /var/lib/monitor.
# It listens on every interface, so it needs a token, which the bundled config reads from
# MONITOR_TOKEN:  docker run -e MONITOR_TOKEN="$(openssl rand -hex 32)" -p 127.0.0.1:9321:9321 ...
#
# Base image: pinned by digest once `make pin-base` has written the tag's current digest
# into PYTHON_IMAGE (it asks the registry; review and commit the change). Rebuild with a
# newer digest the same way to pick up Debian and Python security fixes.
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Every dependency (and setuptools, to build) at the version and hash in requirements.lock.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY monitor ./monitor
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
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
