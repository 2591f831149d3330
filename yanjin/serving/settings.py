"""Serving settings: resolved once by `yanjin serve` and handed to the BentoML worker as JSON in
`YANJIN_SERVE_SETTINGS`; the worker reads them here, once, at its entry point."""
from __future__ import annotations

import json
import os

from ..config import ServeSettings

ENV = "YANJIN_SERVE_SETTINGS"


def from_env() -> ServeSettings:
    return ServeSettings.from_dict(json.loads(os.environ[ENV])) if os.environ.get(ENV) else ServeSettings()


__all__ = ["ENV", "ServeSettings", "from_env"]
