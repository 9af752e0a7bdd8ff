"""HTTP routes, one module per resource. A future /detect plugs in as one more router."""

from . import classify, health, metrics, models, v2

ROUTERS = (classify.router, health.router, models.router, metrics.router, v2.router)
