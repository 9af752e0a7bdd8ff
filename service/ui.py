"""GET /: a page to look at what the models see (``--no-ui`` turns it off).

One static page, shipped in the package (``service/static``: HTML, CSS, a script in a few
modules, sample pictures copied from the repo's ``samples/``), no build step and nothing from a
CDN. The page itself only calls the public API (/models, /classify, /detect) with the user's
key, so it meets the same limits, errors and access control as any client. The page and its
files need no key: they hold nothing but the page (the samples are the repo's own), and a
browser cannot send a bearer token for a page it navigates to.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from .errors import NotFound

STATIC = Path(__file__).with_name("static")
PREFIX = "/ui"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
}
# The files the page may load, fixed at import: no path from a request reaches the disk.
FILES = {
    p.relative_to(STATIC).as_posix(): p
    for p in sorted(STATIC.rglob("*"))
    if p.is_file() and p.suffix in _TYPES and p.name != "index.html"
}
# Exact paths for BearerAuth's open set.
PATHS = frozenset({"/", *(f"{PREFIX}/{name}" for name in FILES)})

# Only the page's own files; the picture shown is a blob: URL of the chosen file. No inline
# script or style (the script sets styles through the CSSOM, which CSP allows).
CSP = (
    "default-src 'self'; img-src 'self' blob:; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # revalidated each time (ETag): a new server version never runs an old script
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)  # a page, not part of the API


@router.api_route("/", methods=["GET", "HEAD"])
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type=_TYPES[".html"], headers=HEADERS)


@router.api_route(PREFIX + "/{name:path}", methods=["GET", "HEAD"])
async def static_file(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise NotFound(f"no file {name!r} in the page's files")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=HEADERS)
