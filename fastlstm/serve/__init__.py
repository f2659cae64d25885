"""`fastlstm serve`: a model behind HTTP on uvicorn (Starlette), requests merged by fastlstm.Batcher.

Needs the `serve` extra: `pip install "fastlstm[serve]"`. `create_app(ServeConfig(...))` gives the
ASGI app for any ASGI server; `fastlstm serve --help` runs it on uvicorn.
"""

from typing import Any, Optional

from .config import BUNDLED_MODEL, ServeConfig

__all__ = ["BUNDLED_MODEL", "ServeConfig", "create_app"]


def create_app(config: Optional[ServeConfig] = None, model: Any = None) -> Any:
    """The Starlette app of `fastlstm serve` (see `fastlstm.serve.app.create_app`), imported on first
    use: Starlette is an optional extra."""
    from .app import create_app as create

    return create(config, model)
