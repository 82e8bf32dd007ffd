# AgentForge DB: the admin and /health/ on gunicorn (scripts/serve), Debian 12 slim, non-root.
# Build stage: compilers for mysqlclient and agentforge_core/_native.c; the final image gets the
# virtualenv and the compiled module, not the compilers.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config default-libmysqlclient-dev \
 && rm -rf /var/lib/apt/lists/*
COPY requirements.txt requirements.lock /tmp/
# requirements.txt is what the application runs with, at the versions CI tested (the lock).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt -c /tmp/requirements.lock
# The import's per-row text in C (docs/import.md), compiled here where the compilers are.
COPY agentforge_core/_native.c /build/agentforge_core/_native.c
COPY scripts/build-native /build/scripts/build-native
RUN cd /build && PYTHON=/opt/venv/bin/python scripts/build-native

FROM python:3.11-slim-bookworm
# Runtime libraries only: MariaDB's client library (mysqlclient), ODBC (SQL Server), and the
# database clients that `manage.py backup` / `restore` call.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmariadb3 libodbc2 postgresql-client mariadb-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin agentforge
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root . /app
COPY --from=build /build/agentforge_core/_native.*.so /app/agentforge_core/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BIND=0.0.0.0:8000 \
    STATIC_ROOT=/app/static \
    COLLECTSTATIC=false
# Static files are collected into the image (hashed and compressed), owned by root, so
# scripts/serve does not collect again (COLLECTSTATIC=false). The settings need some keys to
# load: DEBUG=true gives them development ones, none of which ends up in the image.
RUN DEBUG=true ENV_FILE= python manage.py collectstatic --noinput --verbosity 0 \
 && mkdir -p /app/data && chown agentforge /app/data
USER agentforge
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/', timeout=2)"]
ENTRYPOINT ["scripts/docker-entrypoint"]
CMD ["serve"]
