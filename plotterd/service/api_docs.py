"""``/docs``: Swagger UI served from the daemon itself, so it works on a lab machine with
no internet (FastAPI's own /docs loads it from a CDN). Its files come from the
``swagger-ui-bundle`` package; ReDoc, which has no offline copy here, is not offered."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs-assets"
# the only files served: no name from the request reaches the file system otherwise
FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
         "favicon-32x32.png": "image/png"}


def install(app: FastAPI) -> None:
    """``/docs`` and its assets on ``app`` (made with ``docs_url=None, redoc_url=None``)."""

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json",
                                   title=f"{app.title} API",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon-32x32.png")

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    def asset(name: str) -> FileResponse:
        if name not in FILES:
            raise HTTPException(404, f"no docs asset {name!r}")
        return FileResponse(Path(swagger_ui_path) / name, media_type=FILES[name],
                            headers={"Cache-Control": "max-age=86400"})
