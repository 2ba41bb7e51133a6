"""GET /openapi.json: generated from the route table, every route in it,
path parameters typed, and nothing in it that no route declares."""

from __future__ import annotations

import re

import pytest_twisted

from pxed.web import openapi
from pxed.web.app import RESOURCES, ROUTES
from pxed.web.body import ID_MAX, INT_MAX

METHODS = {"get", "head", "post", "put", "delete", "patch", "options"}


def operations(doc: dict) -> list[tuple[str, str, dict]]:
    return [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


@pytest_twisted.ensureDeferred
async def test_served_publicly_and_equal_to_the_generated_document(server):
    r = await server.anonymous.get("/openapi.json")
    assert r.code == 200
    assert r.headers.getRawHeaders("content-type") == ["application/json"]
    doc = r.json()
    assert doc == openapi.document(RESOURCES)
    assert doc["openapi"].startswith("3.")


def test_every_route_and_method_appears_once_and_nothing_else():
    doc = openapi.document(RESOURCES)
    documented = sorted((op["x-pxed-endpoint"], m.upper()) for _, m, op in operations(doc))
    declared = sorted((e, m) for e, info in ROUTES.items() for m in info.methods)
    assert documented == declared
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))


def test_paths_come_from_the_routes_with_typed_parameters():
    doc = openapi.document(RESOURCES)
    for path, _method, op in operations(doc):
        info = ROUTES[op["x-pxed-endpoint"]]
        expected = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", info.path)
        if info.branch:
            expected = expected.rstrip("/") + "/{path}"
        assert path == expected, (path, info.path)
        params = {p["name"]: p for p in doc["paths"][path].get("parameters", [])}
        assert set(params) == set(re.findall(r"{(\w+)}", path)), path
        for name, param in params.items():
            assert param["in"] == "path" and param["required"] is True
            if f"<int:{name}>" in info.path:
                assert param["schema"] == {"type": "integer", "minimum": 0, "maximum": ID_MAX}
            else:
                assert param["schema"]["type"] == "string"
                assert param["schema"]["minLength"] == 1


def test_security_follows_the_access_rule():
    doc = openapi.document(RESOURCES)
    schemes = doc["components"]["securitySchemes"]
    for path, method, op in operations(doc):
        access = ROUTES[op["x-pxed-endpoint"]].access
        assert op["x-pxed-access"] == access
        assert f"Access ({access})" in op["description"]
        if access == "public":
            assert op["security"] == [], (method, path)
        else:
            names = {name for requirement in op["security"] for name in requirement}
            assert {"bearerToken", "sessionCookie"} <= names, (method, path)
            assert names <= set(schemes)
            assert ("machineCredential" in names) == ("machine" in access), (method, path)


def test_errors_are_json_error_objects_and_successes_from_the_handler():
    doc = openapi.document(RESOURCES)
    error = doc["components"]["schemas"]["Error"]
    assert error["required"] == ["error"]
    assert error["properties"]["error"] == {"type": "string"}
    for path, method, op in operations(doc):
        responses = op["responses"]
        assert {"4XX", "5XX"} <= set(responses), (method, path)
        successes = [s for s in responses if s.startswith("2")]
        assert successes, (method, path)
        if method != "head":
            for group in ("4XX", "5XX"):
                schema = responses[group]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}
    ops = {op["x-pxed-endpoint"]: op for _, m, op in operations(doc) if m != "head"}
    assert next(iter(ops["users.create_user"]["responses"])) == "201"
    assert next(iter(ops["builds.submit_build"]["responses"])) == "202"
    assert "text/plain" in ops["boot.ipxe_boot"]["responses"]["200"]["content"]
    assert "application/json" in ops["machines.list_machines"]["responses"]["200"]["content"]


def test_request_bodies_are_read_from_the_handlers():
    doc = openapi.document(RESOURCES)
    ops = {op["x-pxed-endpoint"]: op for _, m, op in operations(doc) if m != "head"}

    def body(endpoint: str) -> dict:
        return ops[endpoint]["requestBody"]["content"]["application/json"]["schema"]

    # Fields read by the handler and by the helpers it hands the body to.
    log = body("agent.post_log")
    assert log["required"] == ["Message"]
    assert log["properties"]["Message"]["type"] == "string"
    machine = body("machines.create_machine")["properties"]
    assert machine["Managed"] == {"type": "boolean"}
    assert machine["MacAddresses"] == {"type": "array"}
    image = body("images.create_image")["properties"]
    assert image["Size"]["type"] == "integer" and image["Size"]["maximum"] == INT_MAX
    assert {"Owner", "Name", "Type", "Filesystem"} <= set(image)
    # A setup's entries are inside Images, not beside it.
    assert set(body("setups.create_setup")["properties"]) == {"Images", "Name"}
    # Read only when a body is sent.
    assert ops["users.create_token"]["requestBody"]["required"] is False
    # Uploads are files, not JSON.
    upload = ops["images.upload_image"]["requestBody"]["content"]
    assert set(upload) == {"application/octet-stream", "multipart/form-data"}
    headers = {p["name"] for p in ops["images.upload_image"]["parameters"]}
    assert {"X-Checksum-Sha256", "X-BAAS-NewVersion"} <= headers
    # Routes that read no body document none.
    assert "requestBody" not in ops["users.delete_user"]
    events = {p["name"]: p["schema"] for p in ops["users.list_events"]["parameters"]}
    assert events["limit"] == {"type": "integer", "minimum": 1, "maximum": ID_MAX}


def test_nothing_is_written_by_hand():
    # The module holds no paths: every one comes from a @route.
    source = open(openapi.__file__, encoding="utf-8").read()
    for info in ROUTES.values():
        # ("/", the dashboard's page, is in any path-handling code.)
        if info.path not in ("/openapi.json", "/"):
            assert f'"{info.path}"' not in source, info.path
    # A route added to a resource appears without touching the module.
    from pxed.web.router import route

    class Extra:
        @route("/extra/<int:n>", ["GET"], access="admin")
        async def extra(self, request, n: int) -> dict:
            """Something new."""
            return {}

    doc = openapi.document((*RESOURCES, Extra))
    op = doc["paths"]["/extra/{n}"]["get"]
    assert op["summary"] == "Something new."
    assert op["x-pxed-access"] == "admin"
