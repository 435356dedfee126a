"""The job service over HTTP: ``create_app`` (FastAPI), served by ``ambidex serve``."""

from ambidex.server._app import DEFAULT_MAX_BODY_BYTES, create_app

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]
