# weightstore service image: `weightstore db upgrade`, `weightstore init`, then `weightstore serve`.
# Configured only through the environment variables the CLI reads (docker-compose.yml sets them).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY weightstore ./weightstore
COPY migrations ./migrations
# torch first, pinned as scripts/_venv.sh pins it, so that no extra pulls another build.
RUN pip install torch==2.13.0 \
    && pip install ".[postgres,s3,server]" \
    && useradd --create-home --uid 10001 weightstore

USER weightstore
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]

CMD ["sh", "-c", "weightstore db upgrade && weightstore init && exec weightstore serve --host 0.0.0.0 --port 8000"]
