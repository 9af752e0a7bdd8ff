"""``python -m service [--flags]``: serve DAT over HTTP with uvicorn (one process and model copy,
or ``--workers N`` processes sharing the port).

SIGTERM / SIGINT: readiness turns 503 and queues flush at once, uvicorn stops accepting
connections, in-flight requests get ``--shutdown-timeout-s`` to finish, then the process exits 0.
Exit status 1: the model failed to load; 2: bad settings.
"""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError

from .logs import configure_logging
from .server import serve
from .settings import Settings

log = logging.getLogger("service")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        settings = Settings(_cli_parse_args=argv)
    except ValidationError as exc:
        print(f"python -m service: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    log.info("starting", extra={"settings": settings.model_dump(mode="json")})
    if settings.workers > 1:
        from .workers import serve_workers
        return serve_workers(settings, argv)
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
