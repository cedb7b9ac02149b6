"""The OpenAPI `/docs` drives: Bearer scheme, documented errors and `?ts=`, Swagger assets served locally."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.serve_app import api


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(api)


def test_every_protected_route_has_the_bearer_scheme_and_its_errors(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    scheme = schema["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")  # what Swagger's Authorize button needs
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            if path in ("/healthz", "/readyz"):
                assert "security" not in op
                continue
            assert op["security"] == [{"bearer": []}], (method, path)
            assert {"401", "403", "422", "500"} <= set(op["responses"]), (method, path)
    frames = schema["paths"]["/cameras/{camera_id}/frames"]["post"]
    assert {"400", "404", "413", "415", "503"} <= set(frames["responses"])
    assert any(p["name"] == "ts" and p["in"] == "query" for p in frames["parameters"])


def test_docs_page_and_its_assets_come_from_the_app(client: TestClient) -> None:
    page = client.get("/docs").text
    assert "cdn" not in page.lower() and 'src="docs-assets/swagger-ui-bundle.js"' in page
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-assets/swagger-ui.css").headers["content-type"].startswith("text/css")


def test_json_routes_have_typed_answers(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path, method, status in [("/cameras/{camera_id}/status", "get", "200"), ("/admin/plan", "get", "200"),
                                 ("/admin/cameras/{camera_id}", "delete", "200"), ("/admin/apps", "post", "201"),
                                 ("/readyz", "get", "503"), ("/cameras/{camera_id}/events", "get", "200"),
                                 ("/admin/webhooks", "get", "200")]:
        schema = paths[path][method]["responses"][status]["content"]["application/json"]["schema"]
        assert "$ref" in schema, (method, path, schema)  # a named model, not an untyped object
