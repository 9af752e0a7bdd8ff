"""``python -m service``: DAT behind HTTP, concurrent requests batched onto one backend.

from service import Settings, create_app
app = create_app(Settings(model="dat_digits"))
"""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]
