#!/usr/bin/python3
"""Generate docs/openapi.json (OpenAPI 3.0.3) from the endpoint list below.

The document describes every endpoint of the spec's API.md, including those the
route table (fcgi-app/routes.c) does not serve yet. An operation that is not in
the route table carries "x-ezapi-status": "planned"; one served by nginx itself
(Swagger UI) carries "x-ezapi-served-by": "nginx" and is never planned.

Usage (Debian's /usr/bin/python3, stdlib only):

  scripts/gen-openapi.py --implemented-from ROUTES   # marks from a route list
  scripts/gen-openapi.py --binary build/release/ezapi-fcgi
                                                     # same, runs --print-routes
  scripts/gen-openapi.py --from-source               # same, reads fcgi-app/routes.c
  scripts/gen-openapi.py                             # keeps the marks already in
                                                     # docs/openapi.json
  scripts/gen-openapi.py --check [...]               # exit 1 if the file differs

ROUTES is the output of `ezapi-fcgi --print-routes` ("METHOD /pattern" per line,
`-` for stdin). A route that this document does not describe is an error: add
it to the tables below, then regenerate.

Adding an endpoint: add an op(...) call (or a crud(...) family) in
build_paths(); add its schemas in build_schemas(). Path parameters use the
router's names: `:key_id` in routes.c is `{key_id}` here.
"""

import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DEFAULT_OUT = os.path.join(ROOT, "docs", "openapi.json")
VERSION_H = os.path.join(ROOT, "common", "version.h")
ROUTES_C = os.path.join(ROOT, "fcgi-app", "routes.c")

# Operations nginx serves from disk (never in the FastCGI route table).
NGINX_SERVED = {("GET", "/swagger/"), ("GET", "/swagger/doc.json"), ("GET", "/swagger/{any}")}

ERROR_CODES = [
    "invalid_json", "invalid_argument", "unauthorized", "forbidden", "not_found",
    "conflict", "payload_too_large", "unsupported_media_type", "method_not_allowed",
    "rate_limited", "unavailable", "internal",
]

PROVIDER_TYPES = [
    "openai", "compatible", "anthropic", "claude", "claude-code", "codex", "gemini-cli",
    "antigravity", "gemini", "google", "aistudio", "vertex", "vertex-express",
]

NAME_PATTERN = "^[A-Za-z0-9_.-]{1,64}$"
GROUP_PATTERN = "^[A-Za-z0-9_.-]{0,64}$"
NS_PATTERN = "^[a-z0-9_-]{1,64}$"


# --------------------------------------------------------------------------
# small schema helpers

def ref(name):
    return {"$ref": "#/components/schemas/" + name}


def s_str(desc=None, **kw):
    d = {"type": "string"}
    if desc:
        d["description"] = desc
    d.update(kw)
    return d


def s_int(desc=None, **kw):
    d = {"type": "integer", "format": "int64"}
    if desc:
        d["description"] = desc
    d.update(kw)
    return d


def s_num(desc=None, **kw):
    d = {"type": "number", "format": "double"}
    if desc:
        d["description"] = desc
    d.update(kw)
    return d


def s_bool(desc=None, **kw):
    d = {"type": "boolean"}
    if desc:
        d["description"] = desc
    d.update(kw)
    return d


def s_time(desc=None, **kw):
    d = {"type": "string", "format": "date-time"}
    if desc:
        d["description"] = desc
    d.update(kw)
    return d


def s_enum(values, desc=None, **kw):
    return s_str(desc, enum=list(values), **kw)


def s_list(item, desc=None, **kw):
    d = {"type": "array", "items": item}
    if desc:
        d["description"] = desc
    d.update(kw)
    return d


def s_obj(props, required=None, desc=None, **kw):
    d = {"type": "object", "properties": props}
    if required:
        d["required"] = list(required)
    if desc:
        d["description"] = desc
    d.update(kw)
    return d


def ro(schema):
    """Read-only copy of a schema (server-set field)."""
    d = dict(schema)
    d["readOnly"] = True
    return d


def nullable(schema):
    d = dict(schema)
    d["nullable"] = True
    return d


ID = s_int("Positive 64-bit identifier.", minimum=1)
COMMON_RO = {
    "id": ro(ID),
    "created_at": ro(s_time()),
    "updated_at": ro(s_time()),
}


# --------------------------------------------------------------------------
# resources: writable fields, read-only fields, required on create, and
# create_only (writable on create, not by PUT)
#
# For each resource R the generator emits:
#   R        the full object as responses show it
#   RCreate  the writable fields, with the required ones
#   RUpdate  the writable fields, none required (PUT is a partial update)
#   RList    {"items": [R], "total", "page", "page_size"}
# and, where the resource has /batch, RBatchRequest / RBatchResponse.

def resources():
    ns_name = s_str("1-64 chars of [a-z0-9_-] (no dot).", pattern=NS_PATTERN)
    route_group = s_str("Route group name; empty means `default`.", pattern=GROUP_PATTERN)
    r = {}

    r["Namespace"] = dict(
        desc="The first part of a model reference `ns.model`. `default` exists after migration.",
        writable={
            "name": ns_name,
            "description": s_str(maxLength=512),
            "status": s_enum(["active", "disabled"], default="active"),
        },
        readonly={},
        create_only=["name"],
        required=["name"],
    )

    r["Master"] = dict(
        desc="A tenant. Its master key (`mk-...`) is shown once, on creation or rotation.",
        writable={
            "name": s_str("Unique.", pattern=NAME_PATTERN),
            "group": route_group,
            "namespaces": s_list(s_str(pattern=NS_PATTERN),
                                 "Existing namespace names; empty means `[default_namespace]`."),
            "default_namespace": s_str("Must be in `namespaces` when that is non-empty.",
                                       pattern=NS_PATTERN, default="default"),
            "max_child_keys": s_int(minimum=0, maximum=100000, default=10),
            "global_qps": s_int("0 = no limit.", minimum=0, default=0),
        },
        readonly={
            "status": s_enum(["active", "suspended"],
                             "Changed by `POST /admin/masters/{id}/manage` or batch "
                             "`suspend` / `activate`."),
            "epoch": s_int("Bumped when all its keys are revoked.", minimum=0),
            "key_prefix": s_str("Display prefix of the master key."),
            "request_count": s_int(minimum=0),
            "token_count": s_int(minimum=0),
        },
        required=["name"],
    )

    r["Key"] = dict(
        desc="A child key of a master (what the tenant's applications send). "
             "Its `token` (`sk-...`) is shown once, on creation or rotation.",
        writable={
            "name": s_str(maxLength=64),
            "group": s_str("Route group; empty = the master's.", pattern=GROUP_PATTERN),
            "scopes": s_list(s_str()),
            "namespaces": s_list(s_str(pattern=NS_PATTERN), "Subset of the master's."),
            "model_limits_enabled": s_bool(default=False),
            "model_limits": s_list(s_str(), "Model references `ns.model` or `model`."),
            "allow_ips": s_list(s_str(), "IPv4/IPv6 addresses or CIDRs."),
            "expires_at": nullable(s_time("null = never.")),
            "quota_limit": s_int("-1 = unlimited, else tokens.", minimum=-1, default=-1),
            "quota_reset_period": s_enum(["none", "daily", "weekly", "monthly"],
                                         default="none"),
            "status": s_enum(["active", "disabled", "expired", "exhausted"],
                             "`expired` and `exhausted` are set by the system; "
                             "a client may set `active` or `disabled`.", default="active"),
        },
        readonly={
            "master_id": ID,
            "token_prefix": s_str("Display prefix of the token (`sk-abcd…`)."),
            "quota_used": s_int(minimum=0),
            "quota_reset_at": nullable(s_time("Next reset (UTC calendar boundary).")),
            "last_accessed_at": nullable(s_time()),
            "request_count": s_int(minimum=0),
            "token_count": s_int(minimum=0),
        },
        required=[],
    )

    r["ProviderGroup"] = dict(
        desc="An upstream provider account: shared type, endpoint and models.",
        writable={
            "name": s_str("Unique.", pattern=NAME_PATTERN),
            "type": s_enum(PROVIDER_TYPES, "Compared lower-cased and trimmed."),
            "base_url": s_str("http(s) URL; required for `compatible`.", format="uri"),
            "google_project": s_str(),
            "google_location": s_str("Default `global` for `vertex` and `vertex-express`."),
            "models": s_list(s_str(), "Upstream model ids this provider serves."),
            "group": route_group,
            "status": s_enum(["active", "disabled"], default="active"),
        },
        readonly={},
        required=["name", "type"],
    )

    r["APIKey"] = dict(
        desc="One upstream credential inside a provider group (a data-plane provider "
             "`<group name>#<id>`).",
        writable={
            "group_id": s_int("Provider group.", minimum=1),
            "api_key": s_str("The secret. Write-only in spirit: responses show only a masked "
                             "form like `sk-1…9xyz`."),
            "weight": s_int(minimum=1, maximum=1000, default=1),
            "status": s_enum(["active", "disabled", "banned"], default="active"),
            "auto_ban": s_bool(default=True),
            "ban_until": nullable(s_time()),
        },
        readonly={},
        required=["group_id", "api_key"],
    )

    r["Binding"] = dict(
        desc="Routing of `namespace.public_model` to a provider group; unique on "
             "(namespace, public_model, group_id).",
        writable={
            "namespace": s_str(pattern=NS_PATTERN),
            "public_model": s_str(pattern=NAME_PATTERN),
            "group_id": s_int("Provider group.", minimum=1),
            "weight": s_int(minimum=1, maximum=1000, default=1),
            "selector_type": s_enum(["exact", "regex", "normalize_exact"], default="exact"),
            "selector_value": s_str("Default: the public model. `regex`: POSIX extended, "
                                    "must compile."),
            "status": s_enum(["active", "disabled"], default="active"),
        },
        readonly={},
        required=["namespace", "public_model", "group_id"],
    )

    r["Model"] = dict(
        desc="Capabilities published for the data plane, for a public model `m` or a "
             "binding key `ns.m`.",
        writable={
            "name": s_str("Unique; `m` or `ns.m`.", minLength=1, maxLength=255),
            "kind": s_enum(["chat", "embedding", "rerank", "other"], default="chat"),
            "context_window": s_int(minimum=0),
            "cost_per_token": s_num(minimum=0),
            "supports_vision": s_bool(),
            "supports_functions": s_bool(),
            "supports_tool_choice": s_bool(),
            "supports_fim": s_bool(),
            "supports_stream": s_bool(),
            "max_output_tokens": s_int(minimum=0),
        },
        readonly={
            "source": s_enum(["manual", "registry"]),
        },
        required=["name"],
    )
    return r


# Which resources have POST /admin/R/batch, and their extra actions.
BATCH_ACTIONS = {
    "Master": ["create", "delete", "enable", "disable", "suspend", "activate"],
    "APIKey": ["create", "delete", "enable", "disable"],
    "Model": ["create", "delete", "enable", "disable"],
    "Binding": ["create", "delete", "enable", "disable"],
}


def request_log_record():
    return {
        "request_id": s_str(maxLength=128),
        "created_at": s_time("When the balancer saw the request; default: receipt time."),
        "master_id": nullable(s_int()),
        "key_id": nullable(s_int()),
        "namespace": nullable(s_str()),
        "model": nullable(s_str("Public model.")),
        "upstream_model": nullable(s_str()),
        "provider_group_id": nullable(s_int()),
        "api_key_id": nullable(s_int()),
        "provider_type": nullable(s_str()),
        "status_code": nullable(s_int(minimum=100, maximum=599, format="int32")),
        "error": nullable(s_str("Truncated beyond 4096 chars.", maxLength=4096)),
        "latency_ms": nullable(s_int(minimum=0)),
        "ttfb_ms": nullable(s_int(minimum=0)),
        "prompt_tokens": nullable(s_int(minimum=0)),
        "completion_tokens": nullable(s_int(minimum=0)),
        "total_tokens": nullable(s_int(minimum=0)),
        "stream": nullable(s_bool()),
        "client_ip": nullable(s_str("IPv4 or IPv6 address.")),
        "user_agent": nullable(s_str(maxLength=512)),
    }


def build_schemas():
    sc = {}
    sc["Error"] = s_obj(
        {"error": s_obj({
            "code": s_enum(ERROR_CODES),
            "message": s_str("Human-readable; never SQL text or file paths."),
            "field": s_str("Only when one field is at fault, e.g. `items[3].name`."),
            "request_id": s_str(),
        }, required=["code", "message", "request_id"])},
        required=["error"],
        desc="Every error answer.")

    for name, r in resources().items():
        full = dict(COMMON_RO)
        full.update(r["writable"])
        full.update({k: ro(v) for k, v in r["readonly"].items()})
        sc[name] = s_obj(full, required=["id"] + r["required"] + ["created_at", "updated_at"],
                         desc=r["desc"])
        sc[name + "Create"] = s_obj(dict(r["writable"]), required=r["required"] or None,
                                    desc="Writable fields of " + name + ". Unknown or "
                                    "read-only fields are refused or ignored.")
        upd = {k: v for k, v in r["writable"].items() if k not in r.get("create_only", ())}
        sc[name + "Update"] = s_obj(upd,
                                    desc="Partial update: absent fields keep their value; "
                                    "`null` clears a nullable field.")
        sc[name + "List"] = s_obj({
            "items": s_list(ref(name)),
            "total": s_int(minimum=0),
            "page": s_int(minimum=1),
            "page_size": s_int(minimum=1, maximum=200),
        }, required=["items", "total", "page", "page_size"])
    for name, actions in BATCH_ACTIONS.items():
        sc[name + "BatchRequest"] = s_obj({
            "action": s_enum(actions),
            "items": s_list(ref(name + "Create"), "For `create`.", maxItems=1000),
            "ids": s_list(ID, "For every other action.", maxItems=1000),
        }, required=["action"],
            desc="One transaction, all or nothing; at most 1000 entries. A failure names "
                 "the failing index (`field`: `items[3].name` or `ids[2]`).")
        sc[name + "BatchResponse"] = s_obj({
            "action": s_enum(actions),
            "count": s_int(minimum=0),
            "items": s_list(ref(name + ("BatchItem" if name == "Master" else "")),
                            "The created or changed rows (none for `delete`)."),
        }, required=["action", "count", "items"])

    # Secrets shown once.
    sc["MasterCreated"] = {"allOf": [ref("Master"), s_obj(
        {"master_key": s_str("Plaintext master key (`mk-...`), shown only now.")},
        required=["master_key"])]}
    sc["KeyCreated"] = {"allOf": [ref("Key"), s_obj(
        {"token": s_str("Plaintext token (`sk-...`), shown only now.")},
        required=["token"])]}
    sc["MasterBatchItem"] = {"allOf": [ref("Master"), s_obj(
        {"master_key": s_str("Only for `create`: the plaintext master key, shown only now.")})]}
    sc["MasterManageRequest"] = s_obj(
        {"action": s_enum(["suspend", "activate", "rotate_key", "revoke_keys"])},
        required=["action"])
    sc["MasterManageResponse"] = {"allOf": [ref("Master"), s_obj(
        {"master_key": s_str("Only for `rotate_key`: the new key; the old one stops "
                             "working at once.")})],
        "description": "The master after the action."}
    sc["KeyRotateRequest"] = s_obj(
        {"grace_seconds": s_int("How long the old token keeps working.", minimum=0,
                                maximum=86400, default=0)})
    sc["Realtime"] = s_obj({
        "master_id": ID,
        "requests": s_int(minimum=0),
        "tokens": s_int(minimum=0),
        "errors": s_int(minimum=0),
        "qps_10s": s_num(minimum=0),
        "qps_60s": s_num(minimum=0),
        "global_qps": s_int(minimum=0),
        "limited": s_bool(),
        "last_request_at": nullable(s_time()),
    }, required=["master_id", "requests", "tokens", "errors", "qps_10s", "qps_60s",
                 "global_qps", "limited", "last_request_at"],
        desc="Redis realtime counters; zeros when none.")

    sc["BindingResolved"] = s_obj({
        "status": s_str("`ok` or `config_error`."),
        "error": nullable(s_str()),
        "upstreams": s_obj({}, desc="APIKey id -> upstream model name.",
                           additionalProperties=s_str()),
    }, required=["status", "upstreams"])
    sc["BindingDetail"] = {"allOf": [ref("Binding"), s_obj(
        {"resolved": ref("BindingResolved")}, required=["resolved"])]}

    sc["ModelRegistryState"] = s_obj({
        "enabled": s_bool("EZ_MODEL_REGISTRY_ENABLED."),
        "url": s_str("EZ_MODEL_REGISTRY_URL (http(s): scheme://host:port only)."),
        "source": s_str("`models.dev` once loaded; empty when nothing is stored."),
        "version": s_str("First 12 hex digits of the SHA-256 of the stored document."),
        "updated_at": nullable(s_time("The last good fetch (or load of the cached copy).")),
        "models": s_int("Entries stored.", minimum=0),
        "last_error": nullable(s_str("Why the last fetch failed; null when it went well.")),
    }, required=["enabled", "url", "source", "version", "updated_at", "models", "last_error"],
        desc="The model registry (docs/model-registry.md).")

    sc["FeatureMap"] = s_obj(
        {}, additionalProperties={"nullable": True, "oneOf": [s_str(maxLength=256), s_bool(),
                                                              s_num()]},
        desc="Flag name -> value: a string, or JSON true/false/number stored in string "
             "form; `null` deletes the stored value (back to the default). Unknown names "
             "are refused (400) unless prefixed `x_`. All or nothing.",
        example={"maintenance_mode": "false", "x_example": "1"})
    sc["Features"] = s_obj({
        "features": s_obj({}, additionalProperties=s_str(),
                          desc="Every known flag (stored value, else its default) and every "
                               "stored `x_` flag; values are strings."),
        "known": s_obj({}, additionalProperties=s_obj({
            "default": s_str(), "description": s_str(), "type": s_str(),
        }), desc="The known flags with their defaults."),
    }, required=["features", "known"])

    sc["OperationLog"] = s_obj({
        "id": ID,
        "actor": s_str("`admin` or `master:<id>`."),
        "action": s_str("`create`, `update`, `delete`, `batch_<action>`, "
                        "`manage_<action>`, `import`."),
        "resource": s_str(),
        "resource_id": s_str(),
        "request_id": s_str(),
        "client_ip": s_str(),
        "changes": s_obj({}, desc="The fields set; secrets redacted.",
                         additionalProperties=True),
        "created_at": s_time(),
    }, required=["id", "actor", "action", "resource", "created_at"],
        desc="Audit record, written in the same transaction as the change.")
    sc["OperationLogList"] = s_obj({
        "items": s_list(ref("OperationLog")),
        "next_before_id": nullable(s_int("Cursor for the next page; null at the end.")),
    }, required=["items", "next_before_id"])

    sc["RequestLogRecord"] = s_obj(
        request_log_record(), required=["request_id"],
        desc="A request log record as the data plane sends it. Unknown fields are "
             "ignored; wrong types are a 400.",
        additionalProperties=True)
    full = {"id": ID}
    full.update(request_log_record())
    full["received_at"] = s_time("When the control plane stored it.")
    sc["RequestLog"] = s_obj(full, required=["id", "request_id", "created_at"],
                             desc="A stored request log record.")
    sc["RequestLogList"] = s_obj({
        "items": s_list(ref("RequestLog")),
        "next_before_id": nullable(s_int("Cursor for the next page; null at the end.")),
    }, required=["items", "next_before_id"])
    sc["LogIngestRequest"] = s_obj(
        {"logs": s_list(ref("RequestLogRecord"))}, required=["logs"])
    sc["LogIngestResponse"] = s_obj({"accepted": s_int(minimum=0)}, required=["accepted"])
    sc["DeletedCount"] = s_obj({
        "deleted": s_int(minimum=0),
        "complete": s_bool("false when older rows remain after the time budget: repeat "
                           "the call."),
    }, required=["deleted"])

    stats_fields = {
        "requests": s_int(minimum=0),
        "errors": s_int(minimum=0),
        "prompt_tokens": s_int(minimum=0),
        "completion_tokens": s_int(minimum=0),
        "total_tokens": s_int(minimum=0),
        "avg_latency_ms": nullable(s_num("Null when no record has a latency.", minimum=0)),
        "p50_latency_ms": nullable(s_num("Null when no record has a latency.", minimum=0)),
        "p95_latency_ms": nullable(s_num("Null when no record has a latency.", minimum=0)),
    }
    item = {"key": nullable(s_str("The group's value as a string (model, id, status code, "
                                  "hour...); null for records without one."))}
    item.update(stats_fields)
    sc["LogStatsItem"] = s_obj(item, required=["key"] + list(stats_fields))
    sc["LogStats"] = s_obj({
        "items": s_list(ref("LogStatsItem")),
        "totals": s_obj(dict(stats_fields), required=list(stats_fields)),
    }, required=["items", "totals"])

    sc["StatsFlushRequest"] = s_obj({
        "flush_id": s_str("Unique id; a retried flush is applied once.", minLength=1),
        "keys": s_list(s_obj({
            "key_id": ID,
            "requests": s_int(minimum=0),
            "tokens": s_int(minimum=0),
            "quota_used": s_int(minimum=0),
            "last_accessed_at": nullable(s_time()),
        }, required=["key_id"])),
        "masters": s_list(s_obj({
            "master_id": ID,
            "requests": s_int(minimum=0),
            "tokens": s_int(minimum=0),
        }, required=["master_id"])),
    }, required=["flush_id"], desc="Counts are deltas since the last flush.")
    sc["StatsFlushResponse"] = s_obj({
        "applied": s_bool(),
        "duplicate": s_bool("Present (true) when this flush_id was already applied."),
        "unknown_keys": s_int("Key entries naming no existing key (skipped).", minimum=0),
        "unknown_masters": s_int("Master entries naming no existing master (skipped).",
                                 minimum=0),
        "exhausted": s_int("Keys that became `exhausted` with this flush.", minimum=0),
    }, required=["applied"])

    sc["WebhookSettings"] = s_obj({
        "enabled": s_bool("`true` needs a URL (in the body or stored)."),
        "url": nullable(s_str("http or https, checked against the outgoing-URL rules. `\"\"` "
                              "when none is stored; `null` or `\"\"` in a PUT clears it.",
                              maxLength=2048)),
        "secret": nullable(s_str("HMAC-SHA256 key for `X-EZ-Signature`; write-only (never "
                                 "read back, see `secret_set`). 0..256 characters, no control "
                                 "characters; `null` or `\"\"` clears it.",
                                 minLength=0, maxLength=256, writeOnly=True)),
        "secret_set": ro(s_bool("Whether a secret is stored.")),
        "error_rate_threshold": s_num(minimum=0, maximum=1),
        "min_requests": s_int(minimum=1, maximum=1000000),
        "window_seconds": s_int(minimum=10, maximum=86400),
        "cooldown_seconds": s_int(minimum=0, maximum=604800),
        "last_sent_at": ro(nullable(s_time("The last alert a receiver accepted (2xx); null "
                                           "when none."))),
    }, desc="Error-rate alert webhook. The background POSTs `{\"event\": \"error_rate\", "
            "\"window_seconds\", \"requests\", \"errors\", \"error_rate\", \"top_errors\", "
            "\"time\"}` with `X-EZ-Signature: sha256=<hex HMAC-SHA256(secret, body)>` (absent "
            "when no secret is set). PUT is a partial update; read-only fields in a body "
            "are ignored (docs/webhook.md).")
    sc["WebhookTestResponse"] = s_obj({
        "delivered": s_bool("True for a 2xx answer only."),
        "status": nullable(s_int("The receiver's HTTP status; null when no HTTP answer came.")),
        "error": nullable(s_str("Why it was not delivered; null when it was.")),
    }, required=["delivered", "status", "error"],
        desc="The outcome of the test delivery (always a 200 once a test was attempted).")

    def counts(*names):
        return s_obj({n: s_int(minimum=0) for n in names}, required=list(names))

    sc["AdminStats"] = s_obj({
        "masters": counts("total", "active", "suspended"),
        "keys": counts("total", "active", "disabled", "expired", "exhausted"),
        "provider_groups": s_int(minimum=0),
        "api_keys": counts("total", "active", "banned"),
        "bindings": s_int(minimum=0),
        "models": s_int(minimum=0),
        "namespaces": s_int(minimum=0),
        "last_24h": nullable(dict(counts("requests", "errors", "total_tokens"),
                                  description="null when the log database is down.")),
        "outbox": counts("pending", "failed"),
        "snapshot": s_obj({"last_published_at": nullable(s_time())},
                          required=["last_published_at"]),
    }, required=["masters", "keys", "provider_groups", "api_keys", "bindings", "models",
                 "namespaces", "last_24h", "outbox", "snapshot"])

    usage = counts("requests", "errors", "tokens")
    sc["UsageCounts"] = usage
    sc["TenantStats"] = s_obj({
        "keys": s_obj({k: s_int(minimum=0) for k in ("total", "active", "disabled", "expired",
                                                      "exhausted")},
                      required=["total", "active", "disabled", "expired", "exhausted"],
                      desc="The caller's keys, in total and by status."),
        "today": ref("UsageCounts"),
        "last_7d": ref("UsageCounts"),
        "last_30d": ref("UsageCounts"),
        "by_model": s_list({"allOf": [s_obj({"model": s_str()}, required=["model"]),
                                      ref("UsageCounts")]},
                           "Last 30 days by public model, most requests first (at most 100)."),
    }, required=["keys", "today", "last_7d", "last_30d", "by_model"],
        desc="`today` starts at 00:00 UTC; `last_7d` and `last_30d` are rolling. Errors: "
             "status >= 400 or an error text; tokens: total_tokens.")
    sc["TenantSelf"] = {"allOf": [ref("Master"), s_obj({
        "key_count": s_int("Keys of this master.", minimum=0),
        "quota_used": s_int("Sum of its keys' `quota_used`.", minimum=0),
    }, required=["key_count", "quota_used"])],
        "description": "The calling master, no secrets; `request_count` and `token_count` "
                       "are its usage totals."}

    # Import (EXPORT-FORMAT.md, version 1.0.0).
    any_obj = s_obj({}, additionalProperties=True)
    sc["ImportFile"] = s_obj({
        "version": s_str(example="1.0.0"),
        "source": s_obj({"type": s_str(example="newapi"), "version": s_str(),
                         "exported_at": s_time()}),
        "data": s_obj({
            "providers": s_list(s_obj({
                "original_id": s_int(), "name": s_str(), "type": s_str(),
                "base_url": s_str(), "api_key": s_str(), "models": s_list(s_str()),
                "primary_group": s_str(), "all_groups": s_list(s_str()),
                "weight": s_int(), "priority": s_int(),
                "status": s_enum(["active", "disabled"]), "auto_ban": s_bool(),
                "is_multi_key": s_bool(), "multi_key_index": s_int(),
                "original_name": s_str(), "_original": {"description": "Ignored."},
            }, additionalProperties=True)),
            "masters": s_list(s_obj({
                "name": s_str(), "group": s_str(), "namespaces": s_list(s_str()),
                "default_namespace": s_str(), "max_child_keys": s_int(),
                "global_qps": s_int(), "status": s_enum(["active", "suspended"]),
                "_source_user_id": {}, "_source_email": s_str(),
            }, additionalProperties=True)),
            "keys": s_list(s_obj({
                "master_ref": s_str("A master's name."),
                "original_token": s_str("Plaintext; stored hashed and kept usable."),
                "group": s_str(),
                "status": s_enum(["active", "disabled", "expired", "exhausted"]),
                "scopes": s_list(s_str()), "namespaces": s_list(s_str()),
                "model_limits_enabled": s_bool(), "model_limits": s_list(s_str()),
                "expires_at": s_str("RFC 3339 or absent."), "allow_ips": s_list(s_str()),
                "quota_limit": s_int(), "quota_used": s_int(), "unlimited_quota": s_bool(),
                "_original_id": {}, "_token_plaintext_available": s_bool(),
            }, additionalProperties=True)),
            "bindings": s_list(s_obj({
                "namespace": s_str(), "route_group": s_str(), "model": s_str(),
                "status": s_enum(["active", "disabled"]),
            }, additionalProperties=True)),
        }),
        "warnings": s_list(s_str()),
    }, required=["version", "data"], desc="Migration file from New API (EXPORT-FORMAT.md).")
    import_counts = s_obj({k: s_int(minimum=0) for k in ("provider_groups", "api_keys",
                                                          "masters", "keys", "bindings")},
                          additionalProperties=s_int(minimum=0))
    sc["ImportResult"] = s_obj({
        "dry_run": s_bool(),
        "created": import_counts,
        "updated": s_obj({"masters": s_int("Masters whose max_child_keys was raised.",
                                           minimum=0)}),
        "existing": import_counts,
        "skipped": import_counts,
        "masters": s_list(s_obj({"id": nullable(s_int("Null in a dry run.")), "name": s_str(),
                                 "master_key": s_str("Absent in a dry run.")},
                                required=["id", "name"]),
                          "Masters created by this import with their new master keys "
                          "(shown only now)."),
        "warnings": s_list(s_str(), "What could not be mapped, item by item: "
                                    "\"<entry path>: <what happened>\"."),
    }, required=["dry_run", "created", "updated", "existing", "skipped", "masters", "warnings"],
        desc="Counts per resource (`existing`: matched and left unchanged; `skipped`: could "
             "not be mapped), the new masters' keys and the warnings (docs/import.md).")

    sc["Health"] = s_obj({
        "status": s_enum(["ok", "degraded", "unavailable"]),
        "checks": s_obj({k: s_str("`ok`, or why not (`down`, `silent`, ...).")
                         for k in ("postgres", "redis", "log_db", "background")},
                        required=["postgres", "redis", "log_db", "background"]),
    }, required=["status", "checks"])
    sc["StatusTest"] = s_obj({
        "status": s_enum(["ok"]),
        "service": s_enum(["ez-api"]),
        "version": s_str(),
        "time": s_time(),
    }, required=["status", "service", "version", "time"])
    return sc


# --------------------------------------------------------------------------
# shared parameters and responses

def build_parameters():
    def q(name, schema, desc, **kw):
        d = {"name": name, "in": "query", "required": False, "schema": schema,
             "description": desc}
        d.update(kw)
        return d

    p = {
        "id": {"name": "id", "in": "path", "required": True, "schema": ID,
               "description": "Resource id (a positive 64-bit integer)."},
        "key_id": {"name": "key_id", "in": "path", "required": True, "schema": ID,
                   "description": "Child key id."},
        "any": {"name": "any", "in": "path", "required": True, "schema": s_str(),
                "description": "A file of the Swagger UI distribution."},
        "page": q("page", s_int(minimum=1, default=1), "Page number, from 1."),
        "page_size": q("page_size", s_int(minimum=1, maximum=200, default=20),
                       "Items per page (max 200)."),
        "q": q("q", s_str(), "Substring of the name (`%`, `_`, `\\` are literal)."),
        "status": q("status", s_str(), "Only items with this status."),
        "sort": q("sort", s_str(example="-created_at"),
                  "Sort field, `-` for descending: `id`, `-id`, `name`, `-created_at`, ..."),
        "limit": q("limit", s_int(minimum=1, maximum=1000, default=50),
                   "Items per page (max 1000)."),
        "before_id": q("before_id", s_int(minimum=1),
                       "Cursor: only items with a smaller id (`next_before_id` of the "
                       "previous page)."),
        "since": q("since", s_str(), "From this time (RFC 3339 or unix seconds)."),
        "until": q("until", s_str(), "Up to this time (RFC 3339 or unix seconds)."),
        "master_id": q("master_id", s_int(minimum=1), "Filter by master."),
        "key_id_q": q("key_id", s_int(minimum=1), "Filter by child key."),
        "namespace": q("namespace", s_str(), "Filter by namespace."),
        "model": q("model", s_str(), "Filter by public model."),
        "provider_group_id": q("provider_group_id", s_int(minimum=1),
                               "Filter by provider group."),
        "status_code": q("status_code", s_int(minimum=100, maximum=599, format="int32"),
                         "Filter by HTTP status."),
        "status_class": q("status_class", s_enum(["1xx", "2xx", "3xx", "4xx", "5xx"]),
                          "Filter by status class."),
        "request_id": q("request_id", s_str(), "Filter by request id."),
        "group_by": q("group_by", s_enum(["model", "master", "key", "provider_group",
                                          "status_code", "hour", "day"]),
                      "Grouping of the statistics; absent = only the totals."),
        "group_id": q("group_id", s_int(minimum=1), "Filter by provider group."),
        "public_model": q("public_model", s_str(), "Filter by public model."),
        "actor": q("actor", s_str(), "Filter by actor (`admin`, `master:<id>`)."),
        "action": q("action", s_str(), "Filter by action."),
        "resource": q("resource", s_str(), "Filter by resource."),
        "resource_id": q("resource_id", s_str(), "Filter by resource id."),
        "force": q("force", s_bool(default=False),
                   "Also delete the bindings that use the group (same transaction)."),
        "dry_run": q("dry_run", s_bool(default=False),
                     "Validate and report without writing."),
        "before": q("before", s_str(), "Purge records older than this time (RFC 3339 "
                    "or unix seconds).", required=True),
        "format": q("format", s_enum(["json"]), "`json` for the same data as JSON."),
        "X-Request-ID": {"name": "X-Request-ID", "in": "header", "required": False,
                         "schema": s_str(maxLength=128),
                         "description": "Echoed back when it is a sane token; "
                                        "else the server makes one."},
    }
    return p


def pref(name):
    return {"$ref": "#/components/parameters/" + name}


ERROR_RESPONSES = {
    "400": ("BadRequest", "Invalid JSON or argument (`invalid_json`, `invalid_argument`); "
                          "`field` names the culprit."),
    "401": ("Unauthorized", "Missing or wrong credential (`unauthorized`)."),
    "403": ("Forbidden", "Not allowed (`forbidden`), e.g. a suspended master."),
    "404": ("NotFound", "No such resource or route (`not_found`); another tenant's ids "
                        "answer 404 too."),
    "405": ("MethodNotAllowed", "Known path, wrong method (`method_not_allowed`); `Allow` "
                                "lists the methods."),
    "409": ("Conflict", "Uniqueness or reference conflict (`conflict`)."),
    "413": ("PayloadTooLarge", "Body over the limit (`payload_too_large`)."),
    "415": ("UnsupportedMediaType", "Body is not JSON (`unsupported_media_type`)."),
    "429": ("RateLimited", "Too many requests (`rate_limited`)."),
    "500": ("Internal", "Unexpected server error (`internal`)."),
    "503": ("Unavailable", "A dependency is down or the pipeline is full (`unavailable`)."),
}


def build_responses():
    out = {}
    for code, (name, desc) in ERROR_RESPONSES.items():
        headers = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
        if code in ("429", "503"):
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        if code == "405":
            headers["Allow"] = {"$ref": "#/components/headers/Allow"}
        out[name] = {"description": desc, "headers": headers,
                     "content": {"application/json": {"schema": ref("Error")}}}
    out["NoContent"] = {"description": "Done; no body.",
                        "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}}
    return out


# --------------------------------------------------------------------------
# operations

class Paths:
    def __init__(self):
        self.paths = {}
        self.op_ids = set()

    def op(self, method, path, op_id, summary, tag, auth=None, params=(), body=None,
           ok=("200", None, "OK"), errors=(), description=None, ok_content=None,
           extra_ok=None):
        """One operation.

        auth: None, "admin", "master" or "internal".
        params: names in components/parameters, or inline dicts.
        body: schema name (JSON body) or a full requestBody dict.
        ok: (status, schema name or None, description).
        errors: extra error status codes beyond those implied by auth/body/params.
        """
        assert op_id not in self.op_ids, op_id
        self.op_ids.add(op_id)
        method = method.lower()
        o = {"operationId": op_id, "summary": summary, "tags": [tag]}
        if description:
            o["description"] = description
        plist = [pref(p) if isinstance(p, str) else p for p in params]
        plist.append(pref("X-Request-ID"))
        o["parameters"] = plist
        if body is not None:
            if isinstance(body, str):
                o["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": ref(body)}}}
            else:
                o["requestBody"] = body
        if auth == "admin":
            o["security"] = [{"adminBearer": []}]
        elif auth == "master":
            o["security"] = [{"masterBearer": []}]
        elif auth == "internal":
            o["security"] = [{"internalToken": []}]
        else:
            o["security"] = []

        status, schema, desc = ok
        hdr = {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
        if status == "204":
            resp = {"$ref": "#/components/responses/NoContent"}
        else:
            resp = {"description": desc, "headers": hdr}
            if ok_content is not None:
                resp["content"] = ok_content
            elif schema is not None:
                resp["content"] = {"application/json": {"schema": ref(schema)}}
        responses = {status: resp}
        if extra_ok:
            for st, sch, d in extra_ok:
                responses[st] = {"description": d, "headers": hdr,
                                 "content": {"application/json": {"schema": ref(sch)}}}

        codes = set(errors)
        has_path_id = "{" in path and not path.startswith("/swagger/")
        if auth:
            codes.add("401")
        if auth == "master":
            codes.add("403")
        if has_path_id:
            codes.update(("400", "404"))
        if body is not None:
            codes.update(("400", "413", "415"))
        if any(isinstance(p, str) and p not in ("id", "key_id", "any", "X-Request-ID")
               for p in params):
            codes.add("400")
        if path.startswith(("/admin/", "/v1/")):
            codes.update(("429", "503"))
        if not path.startswith("/swagger/"):
            codes.add("500")
        for c in sorted(codes):
            responses[c] = {"$ref": "#/components/responses/" + ERROR_RESPONSES[c][0]}
        o["responses"] = dict(sorted(responses.items()))
        self.paths.setdefault(path, {})[method] = o

    def crud(self, base, res, tag, auth, noun, plural, label, labels, filters=(),
             batch=False, delete_params=(), delete_errors=(), get_schema=None,
             create_ok=None, id_param="id", extra_path_params=()):
        """The five CRUD operations (+ /batch) of one resource.

        noun/plural name the operationIds (createApiKey, listApiKeys); label/labels
        are the human words of the summaries ("API key", "API keys").
        """
        item = base + "/{" + id_param + "}"
        pp = list(extra_path_params)
        ipp = pp + [id_param]
        Pl = plural[0].upper() + plural[1:]
        N = noun[0].upper() + noun[1:]
        a = "an " if label[0].lower() in "aeiou" else "a "
        self.op("GET", base, "list" + Pl, "List " + labels, tag, auth,
                pp + ["page", "page_size", "q", "status", "sort"] + list(filters),
                ok=("200", res + "List", "One page of " + labels + "."))
        self.op("POST", base, "create" + N, "Create " + a + label, tag, auth, pp,
                body=res + "Create", ok=create_ok or ("201", res, "Created."),
                errors=("409",))
        self.op("GET", item, "get" + N, "Get " + a + label, tag, auth, ipp,
                ok=("200", get_schema or res, "The " + label + "."))
        self.op("PUT", item, "update" + N, "Update " + a + label, tag, auth, ipp,
                body=res + "Update", ok=("200", res, "The updated " + label + "."),
                errors=("409",))
        self.op("DELETE", item, "delete" + N, "Delete " + a + label, tag, auth,
                ipp + list(delete_params), ok=("204", None, "Deleted."),
                errors=delete_errors)
        if batch:
            self.op("POST", base + "/batch", "batch" + Pl, "Batch operation on " + labels,
                    tag, auth, body=res + "BatchRequest",
                    ok=("200", res + "BatchResponse", "All entries applied."),
                    errors=("404", "409"),
                    description="Actions: " + ", ".join(
                        "`" + x + "`" for x in BATCH_ACTIONS[res]) +
                    ". One transaction: all or nothing; at most 1000 entries; a failure "
                    "names the failing index in `field`.")


LOG_FILTERS = ["master_id", "key_id_q", "namespace", "model", "provider_group_id",
               "status_code", "status_class", "request_id", "since", "until"]


def build_paths():
    P = Paths()
    json_ct = "application/json"

    # ---- Basic
    P.op("GET", "/health", "getHealth", "Health of every dependency", "Basic",
         ok=("200", "Health", "`ok`, or `degraded` when Redis is down or the background "
                              "silent for more than 30 s."),
         extra_ok=[("503", "Health", "PostgreSQL (main or log) is down; the failing check "
                                     "is named.")],
         description="503 with the failing check named when PostgreSQL (main or log) is "
                     "down; the body then has the same shape as the 200.")
    P.op("GET", "/api/status/test", "getStatusTest", "Liveness and version", "Basic",
         ok=("200", "StatusTest", "The service answers."))
    P.op("GET", "/swagger/", "getSwaggerUI", "Swagger UI", "Basic",
         ok=("200", None, "The Swagger UI page."),
         ok_content={"text/html": {"schema": s_str()}},
         description="Served by nginx from swagger-ui-dist.")
    P.op("GET", "/swagger/doc.json", "getOpenAPIDocument", "This OpenAPI document", "Basic",
         ok=("200", None, "OpenAPI 3 document."),
         ok_content={json_ct: {"schema": s_obj({}, additionalProperties=True)}},
         description="Served by nginx from docs/openapi.json.")
    P.op("GET", "/swagger/{any}", "getSwaggerAsset", "Swagger UI files", "Basic",
         params=["any"], ok=("200", None, "The file."),
         ok_content={"*/*": {"schema": s_str(format="binary")}},
         errors=("404",), description="Served by nginx from swagger-ui-dist.")

    # ---- Internal
    P.op("POST", "/internal/logs", "ingestLogs", "Ingest request logs", "Internal",
         "internal",
         body={"required": True, "content": {
             json_ct: {"schema": ref("LogIngestRequest")},
             "application/x-ndjson": {"schema": s_str(
                 "One RequestLogRecord JSON object per line.")}}},
         ok=("202", "LogIngestResponse",
             "The records are safe: they will reach the log table even if the background "
             "is killed right after."),
         errors=("503",),
         description="All-or-nothing validation: a bad record answers 400 naming its index. "
                     "When the pipeline is full: 503 with `Retry-After`, nothing accepted. "
                     "Body limit 8x EZ_MAX_BODY_BYTES.")
    P.op("POST", "/internal/stats/flush", "flushStats", "Apply usage counters", "Internal",
         "internal", body="StatsFlushRequest",
         ok=("200", "StatsFlushResponse", "`applied: true`, or `applied: false, duplicate: "
                                          "true` for a flush_id already applied."),
         errors=("503",),
         description="Idempotent on `flush_id`. A key whose `quota_used` reaches its "
                     "`quota_limit` becomes `exhausted`.")
    P.op("GET", "/internal/metrics", "getMetrics", "Prometheus metrics", "Internal",
         "internal", params=["format"],
         ok=("200", None, "Prometheus text exposition 0.0.4, or JSON with `?format=json`."),
         ok_content={
             "text/plain": {"schema": s_str("Prometheus text format, version 0.0.4.")},
             json_ct: {"schema": s_obj({}, additionalProperties=True)}},
         description="Request counts by route and status, request duration histogram, log "
                     "records received/written/queued/rejected, log batch write duration, "
                     "outbox pending/failed/applied, snapshot publishes and last publish "
                     "time per resource, PG and Redis up gauges.")

    # ---- Admin: masters and their keys
    T = "Admin: masters"
    P.crud("/admin/masters", "Master", T, "admin", "master", "masters", "master", "masters",
           batch=True,
           create_ok=("201", "MasterCreated", "Created; `master_key` is shown only now."))
    P.op("POST", "/admin/masters/{id}/manage", "manageMaster", "Suspend, activate, rotate "
         "the key or revoke the keys of a master", T, "admin", ["id"],
         body="MasterManageRequest",
         ok=("200", "MasterManageResponse", "The master after the action."),
         description="`rotate_key` answers the new `master_key` (the old one stops working "
                     "at once); `revoke_keys` disables every child key and bumps `epoch`.")
    P.op("GET", "/admin/masters/{id}/realtime", "getMasterRealtime",
         "Realtime counters of a master", T, "admin", ["id"],
         ok=("200", "Realtime", "From Redis; zeros when none."))
    T = "Admin: master keys"
    P.crud("/admin/masters/{id}/keys", "Key", T, "admin", "childKey", "childKeys", "child key",
           "child keys of a master", id_param="key_id", extra_path_params=["id"],
           create_ok=("201", "KeyCreated", "Issued; `token` is shown only now."))
    P.op("POST", "/admin/masters/{id}/keys/{key_id}/rotate", "rotateChildKey",
         "Rotate a child key's token", T, "admin", ["id", "key_id"],
         body={"required": False, "content": {json_ct: {"schema": ref("KeyRotateRequest")}}},
         ok=("200", "KeyCreated", "Same id and settings, new `token` (shown only now); the "
                                  "old token works for `grace_seconds` more."))

    # ---- Admin: providers, models, routing
    P.crud("/admin/provider-groups", "ProviderGroup", "Admin: provider groups", "admin",
           "providerGroup", "providerGroups", "provider group", "provider groups",
           delete_params=["force"], delete_errors=("409",))
    P.paths["/admin/provider-groups/{id}"]["delete"]["description"] = (
        "A group that bindings or API keys use answers 409 naming them; with "
        "`?force=true` its bindings are deleted in the same transaction.")
    P.crud("/admin/api-keys", "APIKey", "Admin: API keys", "admin", "apiKey", "apiKeys",
           "API key", "API keys", filters=["group_id"], batch=True)
    T = "Admin: models"
    P.crud("/admin/models", "Model", T, "admin", "model", "models", "model", "models",
           batch=True)
    P.op("GET", "/admin/models/registry", "getModelRegistry", "Model registry state", T,
         "admin", ok=("200", "ModelRegistryState", "The registry's state."))
    P.op("POST", "/admin/models/registry/refresh", "refreshModelRegistry",
         "Fetch the model registry now", T, "admin",
         ok=("202", "ModelRegistryState", "Refresh started; the current state."),
         errors=("409", "503"),
         description="Kicks the background's model_registry job; poll GET for the result. "
                     "409 while the registry is disabled; 503 when the background cannot be "
                     "reached.")
    P.crud("/admin/bindings", "Binding", "Admin: bindings", "admin", "binding", "bindings",
           "binding", "bindings", filters=["namespace", "public_model", "group_id"],
           batch=True, get_schema="BindingDetail")
    P.crud("/admin/namespaces", "Namespace", "Admin: namespaces", "admin", "namespace",
           "namespaces", "namespace", "namespaces", delete_errors=("409",))
    P.paths["/admin/namespaces/{id}"]["delete"]["description"] = (
        "A namespace that a master, key or binding still uses answers 409 naming them.")

    # ---- Admin: logs, settings, stats, import
    T = "Admin: logs"
    P.op("GET", "/admin/logs", "listLogs", "List request logs", T, "admin",
         LOG_FILTERS + ["limit", "before_id"],
         ok=("200", "RequestLogList", "Newest first; `next_before_id` pages on."))
    P.op("DELETE", "/admin/logs", "purgeLogs", "Purge old request logs", T, "admin",
         ["before"], ok=("200", "DeletedCount", "How many records were deleted."))
    P.op("GET", "/admin/logs/stats", "getLogStats", "Request log statistics", T, "admin",
         LOG_FILTERS + ["group_by"], ok=("200", "LogStats", "Grouped statistics."))
    P.op("GET", "/admin/logs/webhook", "getLogWebhook", "Alert webhook settings", T, "admin",
         ok=("200", "WebhookSettings", "The settings (`secret` is never shown)."))
    P.op("PUT", "/admin/logs/webhook", "updateLogWebhook", "Change the alert webhook", T,
         "admin", body="WebhookSettings", ok=("200", "WebhookSettings", "The new settings."),
         description="Partial update. `url`: http/https; private and loopback addresses "
                     "are refused unless EZ_OUTBOUND_ALLOW_PRIVATE=true.")
    P.op("POST", "/admin/logs/webhook/test", "testLogWebhook", "Send a test event", T,
         "admin", ok=("200", "WebhookTestResponse", "The receiver's answer."),
         errors=("400", "503"),
         description="Sends a signed `test` event to the stored URL (enabled or not) and "
                     "reports the outcome; a receiver's failure is a 200 with "
                     "`delivered: false`. 400 (`field: url`) when no URL is stored; an "
                     "optional body must be a JSON object (docs/webhook.md).")
    T = "Admin: settings and stats"
    P.op("GET", "/admin/features", "getFeatures", "Feature flags", T, "admin",
         ok=("200", "Features", "Every flag with its value, and the known flags."))
    P.op("PUT", "/admin/features", "updateFeatures", "Set feature flags", T, "admin",
         body="FeatureMap", ok=("200", "Features", "Every flag after the change."))
    P.op("GET", "/admin/operation-logs", "listOperationLogs", "Audit log", T, "admin",
         ["actor", "action", "resource", "resource_id", "since", "until", "limit",
          "before_id"],
         ok=("200", "OperationLogList", "Newest first; `next_before_id` pages on."))
    P.op("GET", "/admin/stats", "getAdminStats", "Overview counts", T, "admin",
         ok=("200", "AdminStats", "Counts of every resource, last 24 h, outbox, snapshot."))
    P.op("POST", "/admin/import", "importFile", "Import a New API migration file", T, "admin",
         ["dry_run"], body="ImportFile",
         ok=("200", "ImportResult", "Imported (or, with `dry_run`, what would be)."),
         errors=("409",),
         description="One transaction; importing the same file twice creates no "
                     "duplicates (masters by name, keys by token hash, provider groups by "
                     "name). A file not of the format answers 400 naming the path; values "
                     "that cannot be mapped are warnings. Body up to 8 x EZ_MAX_BODY_BYTES "
                     "(nginx: 1 MiB on /admin/ unless raised; docs/import.md).")

    # ---- Master (tenant) API
    T = "Tenant"
    P.op("GET", "/v1/self", "getSelf", "The calling master", T, "master",
         ok=("200", "TenantSelf", "The master (no secrets), key count and usage totals."))
    P.crud("/v1/tokens", "Key", T, "master", "token", "tokens", "token (child key)",
           "the caller's tokens (child keys)",
           create_ok=("201", "KeyCreated", "Issued; `token` is shown only now."))
    P.paths["/v1/tokens"]["post"]["description"] = (
        "409 past `max_child_keys`. A key may not be wider than the master's namespaces, "
        "nor have a `quota_limit` beyond what the admin allowed (400).")
    P.op("POST", "/v1/tokens/{id}/rotate", "rotateToken", "Rotate a token", T, "master",
         ["id"],
         body={"required": False, "content": {json_ct: {"schema": ref("KeyRotateRequest")}}},
         ok=("200", "KeyCreated", "New `token` (shown only now)."))
    P.op("GET", "/v1/logs", "listTenantLogs", "The caller's request logs", T, "master",
         LOG_FILTERS + ["limit", "before_id"],
         ok=("200", "RequestLogList", "As /admin/logs, restricted to the caller."),
         description="A `master_id` filter naming another master is ignored.")
    P.op("GET", "/v1/logs/stats", "getTenantLogStats", "The caller's log statistics", T,
         "master", LOG_FILTERS + ["group_by"],
         ok=("200", "LogStats", "As /admin/logs/stats, restricted to the caller."))
    P.op("GET", "/v1/stats", "getTenantStats", "The caller's usage", T, "master",
         ok=("200", "TenantStats", "Keys, today, last 7 and 30 days, by model."))
    P.op("GET", "/v1/realtime", "getTenantRealtime", "The caller's realtime counters", T,
         "master", ok=("200", "Realtime", "From Redis; zeros when none."))
    return P.paths


# --------------------------------------------------------------------------
# the document

def read_version():
    try:
        with open(VERSION_H) as f:
            m = re.search(r'#define\s+EZ_VERSION\s+"([^"]+)"', f.read())
            if m:
                return m.group(1)
    except OSError:
        pass
    return "0.0.0"


def build_document():
    tags = ["Basic", "Internal", "Admin: masters", "Admin: master keys",
            "Admin: provider groups", "Admin: API keys", "Admin: models", "Admin: bindings",
            "Admin: namespaces", "Admin: logs", "Admin: settings and stats", "Tenant"]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "EZ-API control plane",
            "version": read_version(),
            "description": (
                "Control plane of an LLM API gateway: tenants (masters) and their keys, "
                "upstream provider groups and API keys, routing bindings, models, request "
                "logs and statistics.\n\n"
                "Conventions: JSON bodies; every response carries `X-Request-ID`; errors are "
                "`{\"error\": {\"code\", \"message\", \"field\", \"request_id\"}}`; lists take "
                "`page`, `page_size` (max 200), `q`, `status`, `sort`; log lists take "
                "`limit` (max 1000) and the `before_id` cursor; `PUT` is a partial update; "
                "secrets are shown once. Unknown route: 404; known path, wrong method: 405 "
                "with `Allow`. CORS preflight (`OPTIONS`) answers 204.\n\n"
                "Operations marked `x-ezapi-status: planned` are specified but not served "
                "by this build yet. Generated by scripts/gen-openapi.py."),
        },
        "servers": [{"url": "/", "description": "This server (behind nginx)."}],
        "tags": [{"name": t} for t in tags],
        "paths": build_paths(),
        "components": {
            "securitySchemes": {
                "adminBearer": {"type": "http", "scheme": "bearer",
                                "description": "`Authorization: Bearer <EZ_ADMIN_TOKEN>` "
                                               "for /admin/*; an empty EZ_ADMIN_TOKEN "
                                               "disables the admin API."},
                "masterBearer": {"type": "http", "scheme": "bearer",
                                 "description": "`Authorization: Bearer <master key>` for "
                                                "/v1/*; 401 unknown key, 403 suspended "
                                                "master."},
                "internalToken": {"type": "apiKey", "in": "header", "name": "X-Internal-Token",
                                  "description": "EZ_INTERNAL_STATS_TOKEN for /internal/*."},
            },
            "schemas": build_schemas(),
            "parameters": build_parameters(),
            "responses": build_responses(),
            "headers": {
                "X-Request-ID": {"description": "The request's id (the client's if sane).",
                                 "schema": s_str()},
                "Retry-After": {"description": "Seconds to wait before retrying.",
                                "schema": s_int(minimum=0, format="int32")},
                "Allow": {"description": "Methods the path accepts, comma separated.",
                          "schema": s_str()},
            },
        },
    }


METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def route_to_openapi(pattern):
    """`/admin/masters/:id/keys/:key_id` -> `/admin/masters/{id}/keys/{key_id}`."""
    return re.sub(r":([A-Za-z_][A-Za-z0-9_]*)", r"{\1}", pattern)


def parse_routes(text):
    routes = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError("bad route line: %r" % line)
        routes.add((parts[0].upper(), route_to_openapi(parts[1])))
    return routes


def apply_marks(doc, implemented, previous):
    """Set x-ezapi-status / x-ezapi-served-by on every operation.

    implemented: set of (METHOD, path) from the route table, or None to keep the
    marks of the previous document (previous: dict or None; absent there = planned).
    Returns the routes that the document does not describe.
    """
    for path, item in doc["paths"].items():
        for method, o in item.items():
            key = (method.upper(), path)
            if key in NGINX_SERVED:
                o["x-ezapi-served-by"] = "nginx"
                continue
            if implemented is not None:
                planned = key not in implemented
            else:
                prev = (previous or {}).get("paths", {}).get(path, {}).get(method)
                planned = prev is None or prev.get("x-ezapi-status") == "planned"
            if planned:
                o["x-ezapi-status"] = "planned"
                note = "**Planned**: specified, not served by this build yet."
                o["description"] = (o["description"] + "\n\n" + note
                                    if "description" in o else note)
    documented = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    return sorted((implemented or set()) - documented)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--implemented-from", metavar="ROUTES",
                    help="file with `ezapi-fcgi --print-routes` output (`-` = stdin)")
    ap.add_argument("--binary", metavar="EZAPI_FCGI",
                    help="run this ezapi-fcgi with --print-routes for the route list")
    ap.add_argument("--from-source", nargs="?", const=ROUTES_C, metavar="ROUTES_C",
                    help="read the route table from the C source (default %(const)s)")
    ap.add_argument("-o", "--output", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 when the output file is not up to date")
    args = ap.parse_args()

    implemented = None
    if sum(1 for a in (args.implemented_from, args.binary, args.from_source) if a) > 1:
        ap.error("give one of --implemented-from, --binary, --from-source")
    if args.implemented_from:
        text = (sys.stdin.read() if args.implemented_from == "-"
                else open(args.implemented_from).read())
        implemented = parse_routes(text)
    elif args.binary:
        text = subprocess.run([args.binary, "--print-routes"], check=True,
                              stdout=subprocess.PIPE, universal_newlines=True).stdout
        implemented = parse_routes(text)
    elif args.from_source:
        with open(args.from_source) as f:
            src = f.read()
        implemented = parse_routes("\n".join(
            m + " " + p for m, p in re.findall(r'\{\s*"([A-Z]+)"\s*,\s*"(/[^"]*)"', src)))

    previous = None
    if os.path.exists(args.output):
        try:
            with open(args.output) as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = None

    doc = build_document()
    missing = apply_marks(doc, implemented, previous)
    if missing:
        for m, p in missing:
            print("gen-openapi: route %s %s is not documented: add it to "
                  "scripts/gen-openapi.py" % (m, p), file=sys.stderr)
        return 1
    out = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

    if args.check:
        try:
            with open(args.output) as f:
                current = f.read()
        except OSError:
            current = None
        if current != out:
            print("gen-openapi: %s is out of date: run this command again without "
                  "--check" % os.path.relpath(args.output, ROOT), file=sys.stderr)
            return 1
        return 0

    tmp = args.output + ".tmp"
    with open(tmp, "w") as f:
        f.write(out)
    os.replace(tmp, args.output)
    nops = sum(len(i) for i in doc["paths"].values())
    nplanned = sum(1 for i in doc["paths"].values() for o in i.values()
                   if o.get("x-ezapi-status") == "planned")
    print("gen-openapi: wrote %s: %d paths, %d operations (%d planned)" % (
        os.path.relpath(args.output, ROOT), len(doc["paths"]), nops, nplanned))
    return 0


if __name__ == "__main__":
    sys.exit(main())
