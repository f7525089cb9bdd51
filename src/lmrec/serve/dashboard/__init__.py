"""The dashboard: one page served by `lmrec serve` at /dashboard, its assets from this package.

    GET /dashboard                   the page (no data in it: it loads without a key)
    GET /dashboard/static/{name}     app.js, style.css, favicon.svg

Everything the page needs is served from here: no CDN, no web fonts, so it works where the
browser reaches nothing but this server. The page reads the JSON API (`lmrec.serve.app`,
`lmrec.serve.model_info`, the catalogue and experiment routes); when read keys are configured
it asks for one, keeps it in sessionStorage and sends it as `Authorization: Bearer`.

A Content-Security-Policy allows scripts, styles and requests from this origin only and no
inline script or event handler; app.js builds the DOM with text nodes, never HTML strings, so
item titles and other user data cannot inject markup.
"""

from __future__ import annotations

import html
from functools import cache
from importlib.resources import files

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

PAGE = "/dashboard"
STATIC = "/dashboard/static"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
          "favicon.svg": "image/svg+xml"}  # the whole list: nothing else is served
ROOT_MARK = "__LMREC_ROOT__"  # in index.html, replaced by the app's root path
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


@cache
def _asset(name: str) -> bytes:
    return (files(__package__) / "static" / name).read_bytes()


def dashboard_router() -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get(PAGE, response_class=HTMLResponse)
    def page(request: Request) -> HTMLResponse:
        # behind a proxy that adds a prefix, the page's links and API calls need it too
        root = html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)
        text = _asset("index.html").decode().replace(ROOT_MARK, root)
        return HTMLResponse(text, headers=HEADERS)

    @r.get(STATIC + "/{name}")
    def static(name: str) -> Response:
        media = ASSETS.get(name)
        if media is None:
            raise HTTPException(404, "no such dashboard file")
        return Response(_asset(name), media_type=media, headers=HEADERS)

    return r
