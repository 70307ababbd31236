"""GET/PUT /admin/features: known flags with defaults, overrides, x_ flags,
validation, and the operation-log and outbox rows of every change."""

import uuid

import pytest

KNOWN = {
    "maintenance_mode": "false",
    "log_sink_enabled": "true",
    "stats_flush_enabled": "true",
    "stats_flush_interval_seconds": "10",
    "strict_model_limits": "true",
}


def put(api, body, **kw):
    return api("PUT", "/admin/features", json=body, **kw)


def stored(pg):
    with pg.cursor() as cur:
        cur.execute("SELECT name, value FROM features")
        return dict(cur.fetchall())


def max_id(pg, table):
    with pg.cursor() as cur:
        cur.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
        return cur.fetchone()[0]


@pytest.fixture
def clean_features(api, pg):
    """Leaves the features table as the test found it (through the API, so Redis follows)."""
    before = stored(pg)
    yield
    after = stored(pg)
    undo = {k: before.get(k) for k in set(before) | set(after) if before.get(k) != after.get(k)}
    if undo:
        r = put(api, undo)
        assert r.status_code == 200, r.text


def test_get_lists_known_flags_with_defaults(api, pg, clean_features):
    # Reset every known flag to its default first.
    r = put(api, {k: None for k in KNOWN})
    assert r.status_code == 200, r.text
    r = api("GET", "/admin/features")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"features", "known"}
    for name, default in KNOWN.items():
        assert body["features"][name] == default
        k = body["known"][name]
        assert k["default"] == default
        assert isinstance(k["description"], str) and k["description"]
        assert k["type"] in ("bool", "int", "string")
    assert set(body["known"]) == set(KNOWN)
    assert all(isinstance(v, str) for v in body["features"].values())


def test_put_known_flag_overrides_and_null_resets(api, pg, clean_features):
    r = put(api, {"maintenance_mode": "true", "stats_flush_interval_seconds": 30})
    assert r.status_code == 200, r.text
    feats = r.json()["features"]
    assert feats["maintenance_mode"] == "true"
    assert feats["stats_flush_interval_seconds"] == "30"
    assert feats["strict_model_limits"] == "true"  # untouched default still listed
    assert stored(pg)["maintenance_mode"] == "true"
    assert api("GET", "/admin/features").json()["features"]["maintenance_mode"] == "true"

    r = put(api, {"maintenance_mode": None})
    assert r.status_code == 200, r.text
    assert r.json()["features"]["maintenance_mode"] == "false"
    assert "maintenance_mode" not in stored(pg)
    # the other override stays
    assert r.json()["features"]["stats_flush_interval_seconds"] == "30"


def test_json_types_converted_to_strings(api, pg, clean_features):
    n = f"x_t{uuid.uuid4().hex[:8]}"
    r = put(api, {"maintenance_mode": False, f"{n}_b": True, f"{n}_i": 42, f"{n}_f": 1.5,
                  f"{n}_neg": -7, f"{n}_s": "hello world"})
    assert r.status_code == 200, r.text
    feats = r.json()["features"]
    assert feats["maintenance_mode"] == "false"
    assert feats[f"{n}_b"] == "true"
    assert feats[f"{n}_i"] == "42"
    assert feats[f"{n}_f"] == "1.5"
    assert feats[f"{n}_neg"] == "-7"
    assert feats[f"{n}_s"] == "hello world"
    db = stored(pg)
    assert db[f"{n}_i"] == "42" and db[f"{n}_b"] == "true"


@pytest.mark.parametrize("value", [{"a": 1}, [1, 2], ["true"]])
def test_objects_and_lists_refused(api, pg, clean_features, value):
    r = put(api, {"x_struct": value})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "x_struct"
    assert "x_struct" not in stored(pg)


def test_unknown_name_refused_naming_the_field(api, pg, clean_features):
    before_ops = max_id(pg, "operation_logs")
    r = put(api, {"maintenance_mode": "true", "no_such_flag": "1"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_argument"
    assert err["field"] == "no_such_flag"
    # all or nothing: the valid flag in the same body was not written either
    assert stored(pg).get("maintenance_mode") != "true"
    assert max_id(pg, "operation_logs") == before_ops


def test_x_prefixed_names_accepted_and_deleted(api, pg, clean_features):
    name = f"x_custom_{uuid.uuid4().hex[:8]}"
    r = put(api, {name: "blue"})
    assert r.status_code == 200, r.text
    assert r.json()["features"][name] == "blue"
    assert name not in r.json()["known"]
    assert api("GET", "/admin/features").json()["features"][name] == "blue"
    r = put(api, {name: None})
    assert r.status_code == 200
    assert name not in r.json()["features"]
    assert name not in stored(pg)
    # deleting what is not stored is harmless
    r = put(api, {name: None})
    assert r.status_code == 200


@pytest.mark.parametrize("name", [
    "", "X_upper", "x-dash", "x.dot", "x_" + "a" * 63, "x_ space", "x_é",
    "x_a'; DROP TABLE features;--", "maintenance_mode\"",
])
def test_bad_names_refused(api, pg, clean_features, name):
    r = put(api, {name: "1"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_argument"
    assert name not in stored(pg)


def test_name_length_limit(api, pg, clean_features):
    ok = "x_" + "a" * 62  # 64 characters
    assert put(api, {ok: "1"}).status_code == 200
    assert stored(pg)[ok] == "1"


def test_value_length_limit(api, pg, clean_features):
    assert put(api, {"x_len": "v" * 256}).status_code == 200
    assert stored(pg)["x_len"] == "v" * 256
    r = put(api, {"x_len": "v" * 257})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "x_len"
    assert stored(pg)["x_len"] == "v" * 256


def test_control_characters_refused(api, pg, clean_features):
    r = put(api, {"x_ctl": "a\nb"})
    assert r.status_code == 400
    assert "x_ctl" not in stored(pg)


@pytest.mark.parametrize("name,value", [
    ("maintenance_mode", "yes"),
    ("maintenance_mode", 1),
    ("maintenance_mode", "TRUE"),
    ("strict_model_limits", ""),
    ("stats_flush_interval_seconds", "ten"),
    ("stats_flush_interval_seconds", 0),
    ("stats_flush_interval_seconds", 3601),
    ("stats_flush_interval_seconds", 1.5),
    ("stats_flush_interval_seconds", True),
])
def test_known_flags_typed(api, pg, clean_features, name, value):
    r = put(api, {name: value})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == name
    assert stored(pg).get(name) != str(value)


def test_bad_bodies(api):
    r = api("PUT", "/admin/features", data="not json",
            headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"
    r = api("PUT", "/admin/features", data="[1]", headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = api("PUT", "/admin/features", data='{"x_a": "1", "x_a": "2"}',
            headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    r = api("PUT", "/admin/features", data='{"x_a": "1"}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415


def test_too_many_flags_in_one_request(api, pg, clean_features):
    body = {f"x_many_{i}": "1" for i in range(257)}
    r = put(api, body)
    assert r.status_code == 400
    assert not any(k.startswith("x_many_") for k in stored(pg))


def test_empty_body_changes_nothing(api, pg, clean_features):
    before_ops = max_id(pg, "operation_logs")
    r = put(api, {})
    assert r.status_code == 200
    assert set(r.json()["features"]) >= set(KNOWN)
    assert max_id(pg, "operation_logs") == before_ops


def test_auth_required(api):
    assert api("GET", "/admin/features", token=None).status_code == 401
    assert api("PUT", "/admin/features", token="wrong", json={"x_a": "1"}).status_code == 401
    assert api("POST", "/admin/features", json={}).status_code == 405


def test_put_writes_one_operation_log_and_one_outbox_row(api, pg, clean_features):
    before_ops = max_id(pg, "operation_logs")
    before_out = max_id(pg, "sync_outbox")
    name = f"x_audit_{uuid.uuid4().hex[:8]}"
    r = put(api, {"maintenance_mode": True, name: "v1", "strict_model_limits": None},
            headers={"X-Request-ID": f"feat-{uuid.uuid4().hex}"})
    assert r.status_code == 200, r.text
    rid = r.headers["X-Request-ID"]
    with pg.cursor() as cur:
        cur.execute("SELECT actor, action, resource, resource_id, request_id, client_ip, changes "
                    "FROM operation_logs WHERE id > %s ORDER BY id", (before_ops,))
        ops = cur.fetchall()
        cur.execute("SELECT resource, resource_id, action FROM sync_outbox WHERE id > %s "
                    "ORDER BY id", (before_out,))
        outbox = cur.fetchall()
    assert len(ops) == 1
    actor, action, resource, resource_id, request_id, client_ip, changes = ops[0]
    assert (actor, action, resource, resource_id) == ("admin", "update", "features", "")
    assert request_id == rid
    assert client_ip
    assert changes == {"maintenance_mode": "true", name: "v1", "strict_model_limits": None}
    assert outbox == [("features", None, "upsert")]

    # The API's view of the same row.
    r = api("GET", "/admin/operation-logs", params={"resource": "features", "limit": 1})
    item = r.json()["items"][0]
    assert item["request_id"] == rid and item["changes"] == changes


def test_failed_put_writes_no_rows(api, pg, clean_features):
    before_ops = max_id(pg, "operation_logs")
    before_out = max_id(pg, "sync_outbox")
    assert put(api, {"maintenance_mode": "maybe"}).status_code == 400
    assert max_id(pg, "operation_logs") == before_ops
    assert max_id(pg, "sync_outbox") == before_out


def test_long_non_ascii_name_error_is_valid_utf8(api, pg, clean_features):
    name = "x_" + "é" * 60  # cut for the error's field: never in the middle of a character
    r = put(api, {name: "1"})
    assert r.status_code == 400
    r.content.decode("utf-8")  # raises on a broken character
    assert name.startswith(r.json()["error"]["field"])
