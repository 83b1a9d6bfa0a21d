"""The team stack's docker-compose.yml and Dockerfile, checked without a container runtime:
services, healthchecks, ports, start order, and that every variable set for weightstore is one
its CLI or settings read (a misspelt variable would be silently ignored in a container)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main
import yaml

from weightstore.cli.main import app
from weightstore.objects.s3config import ENV_VARS, S3Settings, parse_s3_url

ROOT = Path(__file__).resolve().parents[1]


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def cli_env_vars() -> set[str]:
    """Every environment variable a ``weightstore`` option reads (global options included)."""
    root = typer.main.get_command(app)
    found: set[str] = set()

    def walk(command: Any) -> None:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            found.update([envvar] if isinstance(envvar, str) else envvar or [])
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(root)
    return found


def test_services_and_their_start_order() -> None:
    services = compose()["services"]
    assert {"postgres", "minio", "minio-init", "weightstore"} <= set(services)
    for name in ("postgres", "minio", "weightstore"):
        assert services[name]["healthcheck"]["test"], name
    depends = services["weightstore"]["depends_on"]
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["minio-init"]["condition"] == "service_completed_successfully"
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb" in " ".join(services["minio-init"]["entrypoint"])


def test_ports() -> None:
    services = compose()["services"]
    assert "5432:5432" in services["postgres"]["ports"]
    assert "9000:9000" in services["minio"]["ports"]
    assert "8000:8000" in services["weightstore"]["ports"]
    command = " ".join(services["weightstore"]["command"])
    assert "weightstore db upgrade" in command
    assert command.index("db upgrade") < command.index("weightstore serve")
    assert "--host 0.0.0.0 --port 8000" in command
    assert "8000/healthz" in " ".join(services["weightstore"]["healthcheck"]["test"])


def test_every_weightstore_variable_is_read_by_the_cli_or_settings() -> None:
    env: dict[str, str] = compose()["services"]["weightstore"]["environment"]
    read = cli_env_vars() | set(ENV_VARS)
    assert {"WEIGHTSTORE_PATH", "WEIGHTSTORE_INDEX_URL"} <= cli_env_vars()
    assert set(env) <= read, set(env) - read
    # The values fit together: the store is in the bucket minio-init creates, on MinIO.
    bucket, _ = parse_s3_url(env["WEIGHTSTORE_PATH"])
    assert f"local/{bucket}" in " ".join(compose()["services"]["minio-init"]["entrypoint"])
    settings = S3Settings.from_environ(env["WEIGHTSTORE_PATH"], env)
    assert settings.endpoint_url == "http://minio:9000"
    minio = compose()["services"]["minio"]["environment"]
    assert settings.access_key_id == minio["MINIO_ROOT_USER"]
    assert settings.secret_access_key == minio["MINIO_ROOT_PASSWORD"]
    assert "@postgres:5432/" in env["WEIGHTSTORE_INDEX_URL"]


def test_dockerfile_is_slim_non_root_and_checks_health() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:[\d.]+-slim", text, re.M)
    user = re.search(r"^USER (\S+)", text, re.M)
    assert user and user.group(1) not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "weightstore db upgrade" in text and "weightstore serve" in text
