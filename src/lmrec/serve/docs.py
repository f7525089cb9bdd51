"""/docs without a CDN: the Swagger UI page with its script, style sheet and icon served by the
app itself, so the page also works where the browser reaches nothing but this server.

FastAPI's own /docs page loads Swagger UI from a CDN. The assets here come from the
`fastapi-offline` package (MIT; Swagger UI 5, which reads the OpenAPI 3.1 documents FastAPI
writes), installed with the `serve` extra, and are served under /docs/assets/.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")  # what the page loads


def add_docs(app: FastAPI, openapi_url: str) -> None:
    """Serve the Swagger UI page at /docs for the schema at `openapi_url`, assets included."""
    folder = files("fastapi_offline") / "static"
    app.mount(ASSETS_URL, StaticFiles(directory=str(folder)), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy that adds a prefix
        js, css, icon = (f"{root}{ASSETS_URL}/{name}" for name in ASSETS)
        return get_swagger_ui_html(openapi_url=f"{root}{openapi_url}",
                                   title=f"{app.title} - Swagger UI", swagger_js_url=js,
                                   swagger_css_url=css, swagger_favicon_url=icon,
                                   swagger_ui_parameters=app.swagger_ui_parameters)
