"""HTTP routes, one module per resource (``images`` holds what /classify and /detect share)."""

from . import classify, detect, health, metrics, models

ROUTERS = (classify.router, detect.router, health.router, models.router, metrics.router)
