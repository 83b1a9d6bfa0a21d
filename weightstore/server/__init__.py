"""The REST service: ``create_app(settings)`` and its settings (``weightstore serve`` runs it).

Routers per resource live in ``routes/``; ``deps`` holds the store and auth dependencies,
``schemas`` the Pydantic bodies, ``stream`` the on-the-fly safetensors file, ``problems`` the
error responses, ``metrics`` Prometheus.
"""

from weightstore.server.app import create_app
from weightstore.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
