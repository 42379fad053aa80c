# The outbox worker image: `outbox-app worker`, settings from OUTBOX_* variables.
# Two stages: mysqlclient is compiled in the first, and only its runtime library
# (libmariadb3) goes into the image that runs.

FROM python:3.11-slim AS build

# mysqlclient is a C extension: compiler, pkg-config and the client headers.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential pkg-config default-libmysqlclient-dev \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY outbox_app ./outbox_app
COPY handlers ./handlers
# The worker and the MySQL driver (extras of pyproject.toml), nothing for development.
RUN pip install --no-cache-dir ".[worker,mysql]"


FROM python:3.11-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends libmariadb3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --uid 10001 --shell /usr/sbin/nologin outbox

COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER outbox
WORKDIR /home/outbox

# The Faust web view (OUTBOX_WEB_PORT).
EXPOSE 6066

# The first start joins the consumer group and creates tables: give it time.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ.get('OUTBOX_WEB_PORT', '6066'), timeout=4)"]

CMD ["outbox-app", "worker"]
