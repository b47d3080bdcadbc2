"""finerank as an HTTP service (needs the ``server`` extra: FastAPI and uvicorn)."""

from .app import create_app
from .backend import Limits, Service

__all__ = ["Limits", "Service", "create_app"]
