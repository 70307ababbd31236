"""The model registry: GET /admin/models/registry, POST .../refresh (a ZeroMQ
kick of the background's "model_registry" job), the models.dev document read
from a file:// URL and over http, the last good copy kept when a fetch fails
(and used from the cache directory when nothing is stored), and the registry
step of the capability precedence in meta:models (DATA.md "Model").

The registry is off in the test stack: this module restarts the background and
the FastCGI servers with it on (their configuration says "enabled"), and
restores them at the end, after which the registry is cleared again."""

import hashlib
import http.server
import json
import pathlib
import shutil
import threading
import uuid

import pytest

from conftest import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "tests" / "fixtures" / "models-dev-sample.json"
STATE_FIELDS = {"enabled", "url", "source", "version", "updated_at", "models", "last_error"}

GPT4O = {"name": None, "kind": "chat", "context_window": 128000, "cost_per_token": 2.5e-06,
         "supports_vision": True, "supports_functions": True, "supports_tool_choice": True,
         "max_output_tokens": 16384}


def uniq(prefix="r"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def version_of(data):
    return hashlib.sha256(data).hexdigest()[:12]


def created(r):
    assert r.status_code == 201, r.text
    return r.json()


def state(api):
    r = api("GET", "/admin/models/registry")
    assert r.status_code == 200, r.text
    return r.json()


def components(stack):
    return ["background"] + [f"fcgi-{i}" for i in range(1, stack.workers + 1)]


def configure(stack, env=None):
    """Restarts the background and every FastCGI server with env (None = stack defaults)."""
    for c in components(stack):
        stack.ctl("restart", c, env=env)


def pending_rows(pg):
    with pg.cursor() as cur:
        cur.execute("SELECT count(*) FROM sync_outbox WHERE status = 'pending'")
        return cur.fetchone()[0]


def model_meta(rds, key):
    v = rds.hget("meta:models", key)
    return json.loads(v) if v is not None else None


def stored(pg):
    with pg.cursor() as cur:
        cur.execute("SELECT source, version, models, last_error FROM model_registry_state")
        st = cur.fetchone()
        cur.execute("SELECT count(*) FROM model_registry_models")
        return st, cur.fetchone()[0]


def published(rds, pg, key, want):
    """meta:models[key] == want once the outbox has drained."""
    return pending_rows(pg) == 0 and model_meta(rds, key) == want


class Registry:
    """The registry's source document (a copy the tests rewrite) and its cache directory."""

    def __init__(self, stack):
        self.dir = stack.dir / f"registry-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir()
        self.doc = self.dir / "api.json"
        self.cache = self.dir / "cache"
        shutil.copy(SAMPLE, self.doc)
        self.url = f"file://{self.doc}"

    def env(self, url=None, **extra):
        env = {"EZ_MODEL_REGISTRY_ENABLED": "true", "EZ_MODEL_REGISTRY_URL": url or self.url,
               "EZ_MODEL_REGISTRY_CACHE_DIR": str(self.cache),
               "EZ_MODEL_REGISTRY_REFRESH_SECONDS": "3600"}
        env.update(extra)
        return env

    def write(self, data):
        tmp = self.doc.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(self.doc)


@pytest.fixture(scope="module")
def registry(stack):
    reg = Registry(stack)
    configure(stack, reg.env())
    yield reg
    configure(stack)
    # The job runs at start with the registry disabled: it clears what this module stored.
    api = stack.api
    wait_for(lambda: stored_cleared(stack), timeout=60, message="registry cleared")
    wait_for(lambda: state(api)["enabled"] is False, message="workers back to the defaults")
    shutil.rmtree(reg.dir, ignore_errors=True)


def stored_cleared(stack):
    conn = stack.pg()
    try:
        (source, version, models, last_error), rows = stored(conn)
        return version == "" and models == 0 and rows == 0 and pending_rows(conn) == 0
    finally:
        conn.close()


def refresh(api):
    r = api("POST", "/admin/models/registry/refresh")
    assert r.status_code == 202, r.text
    assert set(r.json()) == STATE_FIELDS
    return r.json()


# ------------------------------------------------------------------ disabled (stack default)

def test_disabled_state_and_refresh_refused(api):
    st = state(api)
    assert set(st) == STATE_FIELDS
    assert st["enabled"] is False
    assert st["source"] == "" and st["version"] == "" and st["models"] == 0
    assert st["updated_at"] is None and st["last_error"] is None
    r = api("POST", "/admin/models/registry/refresh")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "conflict"


def test_registry_routes_come_before_model_ids(api):
    # "/admin/models/registry" is not a model id (that would be a 400)
    assert api("GET", "/admin/models/registry").status_code == 200
    # the literal route owns the path: PUT there is a 405, not a PUT of model "registry"
    r = api("PUT", "/admin/models/registry", json={})
    assert r.status_code == 405
    assert r.headers.get("Allow") == "GET, OPTIONS"
    assert r.json()["error"]["code"] == "method_not_allowed"
    r = api("GET", "/admin/models/registry/refresh")
    assert r.status_code == 405
    assert "POST" in r.headers.get("Allow", "")
    assert api("GET", "/admin/models/abc").status_code == 400
    assert api("GET", "/admin/models/registry", token=None).status_code == 401
    assert api("POST", "/admin/models/registry/refresh", token=None).status_code == 401


# ------------------------------------------------------------------ enabled

def test_loads_the_document_at_start(api, pg, registry):
    want = version_of(SAMPLE.read_bytes())
    st = wait_for(lambda: (s := state(api))["version"] == want and s, timeout=60,
                  message="registry loaded")
    assert st["enabled"] is True
    assert st["url"] == registry.url
    assert st["source"] == "models.dev"
    assert st["models"] == 7
    assert st["last_error"] is None
    assert st["updated_at"] is not None
    with pg.cursor() as cur:
        cur.execute("SELECT data FROM model_registry_models WHERE name = 'gpt-4o'")
        data = cur.fetchone()[0]
    assert data["context_window"] == 128000 and data["provider"] == "openai"
    # the last good copy is kept in the cache directory
    assert (registry.cache / "models-dev.json").read_bytes() == SAMPLE.read_bytes()


def test_capability_precedence(api, pg, rds, registry):
    wait_for(lambda: state(api)["models"] == 7, timeout=60, message="registry loaded")
    ns = created(api("POST", "/admin/namespaces", json={"name": uniq("ns")}))["name"]
    g = created(api("POST", "/admin/provider-groups",
                    json={"name": uniq("pg"), "type": "openai",
                          "models": ["gpt-4o", "OpenAI/GPT-4o-mini", "unknown-model"]}))
    created(api("POST", "/admin/api-keys", json={"group_id": g["id"], "api_key": "sk-" + uuid.uuid4().hex}))
    pub = uniq("pub")

    def bind(pm, value):
        created(api("POST", "/admin/bindings",
                    json={"namespace": ns, "public_model": pm, "group_id": g["id"],
                          "selector_value": value}))
        return f"{ns}.{pm}"

    exact = bind(pub, "gpt-4o")
    normalized = bind(uniq("mini"), "OpenAI/GPT-4o-mini")
    missing = bind(uniq("none"), "unknown-model")

    want = dict(GPT4O, name=exact)
    wait_for(lambda: published(rds, pg, exact, want), message="registry capability published")
    mini = model_meta(rds, normalized)
    assert mini["context_window"] == 128000 and mini["max_output_tokens"] == 16384
    assert mini["cost_per_token"] == pytest.approx(0.15e-06)
    assert model_meta(rds, missing) == {"name": missing, "kind": "chat"}

    # a Model named after the public model comes before the registry ...
    created(api("POST", "/admin/models", json={"name": pub, "kind": "chat", "context_window": 5}))
    wait_for(lambda: published(rds, pg, exact, {"name": exact, "kind": "chat",
                                                "context_window": 5}),
             message="Model m takes precedence")
    # ... and a Model named ns.m before that
    created(api("POST", "/admin/models", json={"name": exact, "kind": "embedding"}))
    wait_for(lambda: published(rds, pg, exact, {"name": exact, "kind": "embedding"}),
             message="Model ns.m takes precedence")

    meta = rds.hgetall("meta:models_meta")
    assert meta["source"] == "models.dev"
    assert meta["upstream_ref"] == state(api)["version"]


def test_refresh_picks_up_a_new_document(api, pg, rds, registry):
    wait_for(lambda: state(api)["models"] == 7, timeout=60, message="registry loaded")
    doc = json.loads(SAMPLE.read_text())
    doc["openai"]["models"]["gpt-new"] = {"id": "gpt-new", "limit": {"context": 4242}}
    data = json.dumps(doc).encode()
    registry.write(data)
    refresh(api)
    st = wait_for(lambda: (s := state(api))["version"] == version_of(data) and s, timeout=60,
                  message="refreshed")
    assert st["models"] == 8 and st["last_error"] is None
    # the new entry reaches meta:models through the outbox row "all"
    ns = created(api("POST", "/admin/namespaces", json={"name": uniq("ns")}))["name"]
    g = created(api("POST", "/admin/provider-groups",
                    json={"name": uniq("pg"), "type": "openai", "models": ["gpt-new"]}))
    created(api("POST", "/admin/api-keys", json={"group_id": g["id"], "api_key": "sk-" + uuid.uuid4().hex}))
    pm = uniq("new")
    created(api("POST", "/admin/bindings",
                json={"namespace": ns, "public_model": pm, "group_id": g["id"],
                      "selector_value": "gpt-new"}))
    key = f"{ns}.{pm}"
    wait_for(lambda: published(rds, pg, key, {"name": key, "kind": "chat",
                                              "context_window": 4242}),
             message="new registry entry published")


def test_failed_fetch_keeps_the_last_good_copy(api, pg, registry):
    good = wait_for(lambda: (s := state(api))["models"] >= 7 and s["last_error"] is None and s,
                    timeout=60, message="registry loaded")
    registry.write(b"{ not json")
    refresh(api)
    st = wait_for(lambda: (s := state(api))["last_error"] and s, timeout=60,
                  message="fetch error recorded")
    assert "not usable" in st["last_error"]
    assert st["version"] == good["version"] and st["models"] == good["models"]
    (_, _, models, _), rows = stored(pg)
    assert rows == good["models"]

    # nothing stored at all and the source gone: the cached copy is loaded
    with pg.cursor() as cur:
        cur.execute("DELETE FROM model_registry_models")
        cur.execute("UPDATE model_registry_state SET version = '', models = 0, last_error = ''")
    registry.doc.unlink()
    refresh(api)
    st = wait_for(lambda: (s := state(api))["models"] > 0 and s, timeout=60,
                  message="cache loaded")
    cached = (registry.cache / "models-dev.json").read_bytes()
    assert st["version"] == version_of(cached)
    assert "cannot open" in st["last_error"]
    assert stored(pg)[1] == st["models"]

    # the source is back: the error clears
    registry.write(SAMPLE.read_bytes())
    refresh(api)
    st = wait_for(lambda: (s := state(api))["version"] == version_of(SAMPLE.read_bytes())
                  and s["last_error"] is None and s, timeout=60, message="recovered")
    assert st["models"] == 7


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    status = 200

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_source():
    _Handler.body = SAMPLE.read_bytes()
    _Handler.status = 200
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/api.json"
    srv.shutdown()
    srv.server_close()


def test_http_source_and_private_addresses(api, stack, pg, registry, http_source):
    with pg.cursor() as cur:
        cur.execute("DELETE FROM model_registry_models")
        cur.execute("UPDATE model_registry_state SET version = '', models = 0, last_error = ''")
    _Handler.body = json.dumps({"p": {"models": {"over-http": {}}}}).encode()
    # the test stack allows private addresses (EZ_OUTBOUND_ALLOW_PRIVATE=true)
    stack.ctl("restart", "background", env=registry.env(http_source))
    st = wait_for(lambda: (s := state(api))["version"] == version_of(_Handler.body) and s,
                  timeout=60, message="loaded over http")
    assert st["models"] == 1 and st["last_error"] is None

    _Handler.status = 503
    refresh(api)
    st = wait_for(lambda: (s := state(api))["last_error"] and s, timeout=60,
                  message="HTTP error recorded")
    assert "HTTP 503" in st["last_error"] and st["models"] == 1

    # loopback is refused unless EZ_OUTBOUND_ALLOW_PRIVATE=true
    _Handler.status = 200
    with pg.cursor() as cur:
        cur.execute("UPDATE model_registry_state SET last_error = ''")
    stack.ctl("restart", "background",
              env=registry.env(http_source, EZ_OUTBOUND_ALLOW_PRIVATE="false"))
    st = wait_for(lambda: (s := state(api))["last_error"] and s, timeout=60,
                  message="private address refused")
    assert "127.0.0.1" in st["last_error"] or "loopback" in st["last_error"]


def test_verify_snapshot_models_the_registry_step(api, stack, pg, rds, registry):
    # verify-snapshot mirrors step 3 of meta:models. Earlier tests may leave another
    # source configured: back to the sample document, with no periodic rebuild, so
    # that only this test changes meta:models while it runs.
    from test_snapshot import verify, wait_verified

    registry.write(SAMPLE.read_bytes())
    stack.ctl("restart", "background", env=registry.env(EZ_SYNC_RECONCILE_SECONDS="0"))
    want_version = version_of(SAMPLE.read_bytes())
    wait_for(lambda: (s := state(api))["version"] == want_version and s["models"] == 7
             and s["last_error"] is None, timeout=60, message="sample registry loaded")

    ns = created(api("POST", "/admin/namespaces", json={"name": uniq("ns")}))["name"]
    # the first candidate (lower group id) resolves to a model without an entry, the
    # second (no API key: keys do not matter here) to one found by its normalised form
    plain = created(api("POST", "/admin/provider-groups",
                        json={"name": uniq("pg"), "type": "openai", "models": ["no-entry"]}))
    created(api("POST", "/admin/api-keys",
                json={"group_id": plain["id"], "api_key": "sk-" + uuid.uuid4().hex}))
    known = created(api("POST", "/admin/provider-groups",
                        json={"name": uniq("pg"), "type": "openai",
                              "models": ["Anthropic/Claude-Sonnet-4-20250514"]}))
    pm = uniq("sonnet")
    for g, value in ((plain, "no-entry"), (known, "Anthropic/Claude-Sonnet-4-20250514")):
        created(api("POST", "/admin/bindings",
                    json={"namespace": ns, "public_model": pm, "group_id": g["id"],
                          "selector_value": value}))
    key = f"{ns}.{pm}"
    wait_for(lambda: pending_rows(pg) == 0 and (m := model_meta(rds, key))
             and m.get("context_window", 0) > 0, message="registry capability published")
    assert model_meta(rds, key)["supports_functions"] is True

    wait_verified(stack)

    # and it does check the field: the default in place of the entry is a difference
    good = rds.hget("meta:models", key)
    rds.hset("meta:models", key, json.dumps({"name": key, "kind": "chat"}))
    try:
        rc, out = verify(stack)
        assert rc == 1 and f"meta:models[{key}]" in out, out
    finally:
        rds.hset("meta:models", key, good)
    wait_verified(stack)
    # the module's teardown turns the registry off, which clears what it stored
