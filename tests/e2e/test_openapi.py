"""The OpenAPI document at /swagger/doc.json against the route table and itself.

* every route of `ezapi-fcgi --print-routes` (`:x` -> `{x}`) is documented;
* every documented operation not marked `"x-ezapi-status": "planned"` (and not
  served by nginx itself, `"x-ezapi-served-by": "nginx"`) is routed;
* the document is well formed: OpenAPI 3.0.3, every $ref resolves, path
  parameters are declared, operationIds are unique, security schemes exist;
* docs/openapi.json is what scripts/gen-openapi.py generates (no hand edits);
* /swagger/ serves the Swagger UI, whose initializer loads doc.json.

After adding routes: scripts/gen-openapi.py --binary build/release/ezapi-fcgi
"""

import re
import subprocess
import sys
import urllib.parse
import warnings

import pytest

from conftest import ROOT

GEN = ROOT / "scripts" / "gen-openapi.py"
REGEN_HINT = "run: scripts/gen-openapi.py --binary build/<mode>/ezapi-fcgi"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


@pytest.fixture(scope="module")
def doc(stack):
    r = stack.api("GET", "/swagger/doc.json")
    assert r.status_code == 200, r.text[:200]
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


@pytest.fixture(scope="module")
def routes(stack):
    """(METHOD, /openapi/{path}) for every route of the stack's ezapi-fcgi."""
    binary = stack.build / "ezapi-fcgi"
    assert binary.is_file(), f"no {binary} (STACK_BUILD={stack.build})"
    out = subprocess.run([str(binary), "--print-routes"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    found = set()
    for line in out.splitlines():
        if not line.strip():
            continue
        method, pattern = line.split()
        found.add((method.upper(), re.sub(r":([A-Za-z_][A-Za-z0-9_]*)", r"{\1}", pattern)))
    assert ("GET", "/health") in found, out
    return found


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method.upper(), path, op


def test_every_route_is_documented(doc, routes):
    documented = {(m, p) for m, p, _ in operations(doc)}
    missing = sorted(routes - documented)
    assert not missing, (f"routes missing from /swagger/doc.json: {missing}; add them to "
                         f"scripts/gen-openapi.py and {REGEN_HINT}")


def test_every_unplanned_operation_is_routed(doc, routes):
    unrouted = [(m, p) for m, p, op in operations(doc)
                if op.get("x-ezapi-status") != "planned"
                and op.get("x-ezapi-served-by") != "nginx"
                and (m, p) not in routes]
    assert not unrouted, (f"documented as served but not in the route table: {unrouted}; "
                          f"mark them planned ({REGEN_HINT})")
    stale = sorted((m, p) for m, p, op in operations(doc)
                   if op.get("x-ezapi-status") == "planned" and (m, p) in routes)
    if stale:
        warnings.warn(f"routed but still marked planned in doc.json: {stale}; {REGEN_HINT}")


def test_nginx_served_operations_answer(doc, api):
    served = [(m, p) for m, p, op in operations(doc) if op.get("x-ezapi-served-by") == "nginx"]
    assert ("GET", "/swagger/doc.json") in served and ("GET", "/swagger/") in served, served
    for method, path in served:
        concrete = path.replace("{any}", "swagger-ui.css")
        assert "{" not in concrete, path
        r = api(method, concrete)
        assert r.status_code == 200, (method, concrete, r.status_code)


def test_document_is_well_formed(doc):
    assert doc["openapi"] == "3.0.3"
    assert doc["info"]["title"] and doc["info"]["version"]
    comps = doc["components"]
    assert {"adminBearer", "masterBearer", "internalToken"} <= set(comps["securitySchemes"])
    assert comps["securitySchemes"]["internalToken"]["name"] == "X-Internal-Token"
    for name in ("Namespace", "Master", "Key", "ProviderGroup", "APIKey", "Binding", "Model",
                 "FeatureMap", "OperationLog", "RequestLog", "Error"):
        assert name in comps["schemas"], name

    def resolve(ref):
        assert ref.startswith("#/"), ref
        node = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and part in node, f"unresolved $ref {ref}"
            node = node[part]
        return node

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)

    op_ids = []
    for method, path, op in operations(doc):
        where = f"{method} {path}"
        op_ids.append(op["operationId"])
        params = [resolve(p["$ref"]) if "$ref" in p else p for p in op.get("parameters", [])]
        declared = {p["name"] for p in params if p["in"] == "path"}
        assert all(p["required"] for p in params if p["in"] == "path"), where
        templated = set(re.findall(r"{([^}]+)}", path))
        assert declared == templated, f"{where}: path params {declared} vs {templated}"
        assert any(code.startswith("2") for code in op["responses"]), where
        for req in op.get("security", []):
            assert set(req) <= set(comps["securitySchemes"]), where
        # Credentials follow the prefix, as the router's self-check demands.
        schemes = {s for req in op.get("security", []) for s in req}
        if path.startswith("/admin/"):
            assert schemes == {"adminBearer"}, where
        elif path.startswith("/v1/"):
            assert schemes == {"masterBearer"}, where
        elif path.startswith("/internal/"):
            assert schemes == {"internalToken"}, where
        else:
            assert not schemes, where
    dups = {i for i in op_ids if op_ids.count(i) > 1}
    assert not dups, f"duplicate operationIds: {dups}"


def test_error_schema_matches_api_conventions(doc):
    err = doc["components"]["schemas"]["Error"]
    inner = err["properties"]["error"]
    assert set(inner["required"]) == {"code", "message", "request_id"}
    assert {"invalid_json", "invalid_argument", "unauthorized", "not_found",
            "method_not_allowed", "unavailable"} <= set(inner["properties"]["code"]["enum"])


def test_committed_document_is_generated():
    # Regenerates in memory, keeping the committed planned marks; any hand edit
    # of docs/openapi.json (or a generator change not regenerated) fails here.
    res = subprocess.run([sys.executable or "/usr/bin/python3", str(GEN),
                          "--check"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_swagger_ui_loads_doc_json(api, doc):
    r = api("GET", "/swagger/")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert 'id="swagger-ui"' in r.text
    m = re.search(r'src="\.?/?(swagger-initializer\.js)"', r.text)
    assert m, "index.html does not load swagger-initializer.js"

    r = api("GET", "/swagger/" + m.group(1))
    assert r.status_code == 200
    assert "javascript" in r.headers["Content-Type"]
    js = r.text
    assert "petstore.swagger.io" not in js
    assert re.search(r'["\'](?:/swagger/|\./)?doc\.json["\']', js), js
    # The URL the initializer names, resolved against the page, is this document.
    target = urllib.parse.urljoin("/swagger/", "doc.json")
    r = api("GET", target)
    assert r.status_code == 200 and r.json() == doc
