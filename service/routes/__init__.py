"""HTTP routes, one module per resource (``images`` holds what /classify and /detect share)."""

from . import classify, detect, health, metrics, models, v2

ROUTERS = (classify.router, detect.router, health.router, models.router, metrics.router, v2.router)
