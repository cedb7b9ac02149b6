"""What `/docs` shows and needs: a Bearer security scheme, every route's error answers, local assets.

Routes read their own bodies and tokens (see `app.images`, `app.auth`), so FastAPI cannot infer these
from signatures; this module adds them to the generated schema once, from the status codes the
ingress really answers (`serve_app._http_error`, `app.images.STATUS_FOR_REASON`). Swagger UI's
JavaScript and CSS come from the `swagger-ui-bundle` package and are served by the app (no CDN), so
`/docs` works offline; ReDoc has no offline bundle on our index, so `/redoc` is off.
"""
from __future__ import annotations

from typing import Any

import swagger_ui_bundle
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

SCHEME = "bearer"
ASSETS = "/docs-assets"
PUBLIC_TAGS = {"probes"}  # routes anyone may call
ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_COMMON = {401: "missing or malformed `Authorization: Bearer <token>`",
           403: "this token does not open this route (camera token on an admin route, or another camera's)",
           422: "invalid body, query parameter or id (the message names the field)",
           500: "internal error (logged on the replica; never caused by bad input)"}
_FRAMES = {400: "body is not an image (not a JPEG/PNG, truncated, corrupt) or a malformed multipart body",
           413: "image, pixels or body over the limits",
           415: "Content-Type is not image/jpeg or image/png (frames:batch: not multipart/form-data)",
           503: "the camera's executor queue is full: retry after the `Retry-After` header's seconds"}


def _errors(path: str, method: str) -> dict[int, str]:
    out = dict(_COMMON)
    if "{camera_id}" in path or "{webhook_id}" in path:
        out[404] = "unknown camera (only the admin token learns this) or webhook"
    if path.endswith(("/frames", "/frames:batch", "/samples")):
        out |= _FRAMES
    if method in ("post", "patch") and path.startswith("/admin/cameras"):
        out[403] = _COMMON[403] + "; or a file source outside ingest.allowed_dirs"
    if method == "post" and path.startswith("/admin"):
        out[409] = "the request contradicts how the server runs (e.g. another package than the served one)"
    return out


def document(api: FastAPI) -> dict[str, Any]:
    """The OpenAPI schema with the security scheme and error answers (cached on `api`)."""
    if api.openapi_schema is not None:
        return api.openapi_schema
    schema = get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http", "scheme": "bearer",
        "description": "the admin token (admin routes) or the camera's own token (camera routes)"}
    components.setdefault("schemas", {})["Error"] = {
        "type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}
    for path, operations in schema.get("paths", {}).items():
        for method, op in operations.items():
            if PUBLIC_TAGS.intersection(op.get("tags", [])):
                continue
            op["security"] = [{SCHEME: []}]
            answers = op.setdefault("responses", {})
            for status, text in _errors(path, method).items():
                answers.setdefault(str(status), {"description": text, "content": ERROR})
    api.openapi_schema = schema
    return schema


def serve_docs(api: FastAPI) -> None:
    """Swagger UI at `/docs` from local assets (relative URLs, so a non-root `route_prefix` works too)."""
    api.mount(ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @api.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="openapi.json", title=f"{api.title} API",
                                   swagger_js_url=f"{ASSETS.lstrip('/')}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS.lstrip('/')}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS.lstrip('/')}/favicon-32x32.png",
                                   swagger_ui_parameters={"persistAuthorization": True})

    api.openapi = lambda: document(api)  # type: ignore[method-assign]
