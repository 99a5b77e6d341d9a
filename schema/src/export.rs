//! Machine-readable exports of the contract: a JSON Schema bundle and an OpenRPC document.
//!
//! Both are built from the method table ([`METHODS`], [`EVENTS`]) and the wire types'
//! `JsonSchema` derives, so they cannot disagree with the Rust types. `cargo xtask schema`
//! writes them to `schema/dspeak.schema.json` and `schema/openrpc.json`; the server
//! answers `rpc.discover` with [`openrpc_document`]; the TypeScript SDK's types are
//! generated from [`json_schema_bundle`].
//!
//! Two contracts, one namespace. Params are described as the server *reads* them
//! (schemars' deserialize contract: fields with defaults are optional, unknown fields are
//! allowed because real mediasoup clients send extras). Results and events are described
//! as the server *writes* them (serialize contract: every field the server always sends
//! is required, and objects are closed with `additionalProperties: false`). A type that
//! is both read and written (e.g. `RtpParameters`) therefore has two schemas: the
//! written one keeps the type's name, the read one gets the suffix [`INPUT_SUFFIX`]
//! (`RtpParametersInput`).
//!
//! Numbers: no `u64` reaches the wire (JavaScript numbers are exact only up to 2^53).
//! schemars marks integers with the formats `uint8`, `uint16`, `uint32` and `int64`
//! (timestamps, codec parameters) and floats with `double`; validators such as ajv need
//! these formats registered.

use std::collections::{BTreeMap, BTreeSet};

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::admin::WebhookEvent;
use crate::api::{Area, EVENTS, EVERY_METHOD_ERRORS, METHODS, MethodInfo};
use crate::auth::TokenClaims;
use crate::error::{ErrorCode, STANDARD_ERROR_CODES};
use crate::events::{ResumeFailed, SessionEnded};
use crate::rooms::WrongNode;

/// The JSON Schema dialect of the bundle.
pub const JSON_SCHEMA_DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The OpenRPC specification version the document follows.
pub const OPENRPC_VERSION: &str = "1.3.2";

/// Suffix of the deserialize-contract twin of a type that is both read and written.
pub const INPUT_SUFFIX: &str = "Input";

/// Name under `$defs` of the JSON-RPC error object schema.
pub const ERROR_OBJECT_DEF: &str = "JsonRpcError";

/// Top-level extension keyword of the bundle that maps every method to its params and
/// result schemas and describes the event subscription.
pub const BUNDLE_METHODS_KEYWORD: &str = "x-dspeak";

/// The application errors `method` can answer with, in numeric order: its column of
/// the method table and [`EVERY_METHOD_ERRORS`].
pub fn method_errors(method: &str) -> Vec<ErrorCode> {
    let listed = METHODS.iter().find(|m| m.name == method).map(|m| m.errors).unwrap_or(&[]);
    with_every_method_errors(listed)
}

fn with_every_method_errors(listed: &[ErrorCode]) -> Vec<ErrorCode> {
    let mut codes: Vec<ErrorCode> = listed.iter().chain(EVERY_METHOD_ERRORS).copied().collect();
    codes.sort_by_key(|c| c.code());
    codes.dedup();
    codes
}

/// JSON-RPC `invalidParams`.
const INVALID_PARAMS: i32 = -32602;
/// JSON-RPC `internalError`.
const INTERNAL_ERROR: i32 = -32603;

/// The JSON Schema bundle: every wire type under `$defs`, the JSON-RPC error object
/// ([`ERROR_OBJECT_DEF`]), the access-token claims (`TokenClaims`, what backends sign),
/// and under [`BUNDLE_METHODS_KEYWORD`] the params/result reference of each method, the
/// event item reference, the token claims reference and the webhook body reference
/// (`WebhookEvent`, what webhook receivers get), and the `data` of the error that ends
/// an event stream (`SessionEnded`), the `data` of a `resumeFailed` error
/// (`ResumeFailed`) and of a `wrongNode` error (`WrongNode`).
///
/// To validate a value, resolve a reference such as `#/$defs/JoinResult` against this
/// document (e.g. ajv: `addSchema(bundle, "dspeak")`, then `getSchema("dspeak#/$defs/JoinResult")`).
pub fn json_schema_bundle() -> Value {
    let c = Contract::collect();
    let methods: Map<String, Value> =
        c.methods.iter().map(|m| (m.info.name.to_owned(), json!({ "params": m.params, "result": m.result }))).collect();
    json!({
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "dspeak wire contract",
        "description": format!(
            "Params (as the server reads them), results and events (as it writes them) of the dspeak \
             JSON-RPC 2.0 API, version {}. Params are JSON objects (by name).",
            env!("CARGO_PKG_VERSION")
        ),
        BUNDLE_METHODS_KEYWORD: {
            "version": env!("CARGO_PKG_VERSION"),
            "methods": methods,
            "subscription": {
                "subscribe": EVENTS.subscribe,
                "unsubscribe": EVENTS.unsubscribe,
                "notification": EVENTS.notification,
                "item": c.event,
            },
            "tokenClaims": c.token_claims,
            "webhookEvent": c.webhook_event,
            "sessionEnded": c.session_ended,
            "resumeFailed": c.resume_failed,
            "wrongNode": c.wrong_node,
        },
        "$defs": c.defs,
    })
}

/// The OpenRPC 1.x document of the API: every method with its by-name params (one
/// content descriptor per member of the params object), result and errors, the
/// `subscribeEvents` / `unsubscribeEvents` pair with the `event` notification it
/// streams (`x-notification`), and all types under `components.schemas`.
pub fn openrpc_document() -> Value {
    let c = Contract::collect();
    let schemas: Map<String, Value> =
        c.defs.iter().map(|(k, v)| (k.clone(), rewrite_refs(v.clone(), "#/components/schemas/"))).collect();
    let mut methods: Vec<Value> = c.methods.iter().map(|m| openrpc_method(m, &c.defs)).collect();
    methods.extend(openrpc_subscription(&c.event));
    let mut errors = Map::new();
    for code in ErrorCode::ALL {
        errors.insert(code.name().to_owned(), json!({ "code": code.code(), "message": code.description() }));
    }
    for (code, name, description) in STANDARD_ERROR_CODES {
        errors.insert((*name).to_owned(), json!({ "code": code, "message": description }));
    }
    json!({
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "dspeak",
            "description": "Signaling API of the dspeak WebRTC audio SFU: JSON-RPC 2.0 over WebSocket, \
                            params by name. mediasoup-compatible ORTC shapes. Application error codes \
                            live in 1000-1099 (see components.errors).",
            "version": env!("CARGO_PKG_VERSION"),
            "license": { "name": "MIT OR Apache-2.0" },
        },
        "servers": [{ "name": "local development", "url": "ws://127.0.0.1:8080" }],
        "methods": methods,
        "components": {
            "schemas": schemas,
            "errors": errors,
        },
    })
}

/// A method's params and result as references into the merged `$defs`.
struct MethodRefs {
    info: &'static MethodInfo,
    params: Value,
    result: Value,
}

/// Everything both exports are built from.
struct Contract {
    defs: Map<String, Value>,
    methods: Vec<MethodRefs>,
    event: Value,
    token_claims: Value,
    webhook_event: Value,
    session_ended: Value,
    resume_failed: Value,
    wrong_node: Value,
}

impl Contract {
    fn collect() -> Self {
        let mut read = SchemaSettings::draft2020_12().for_deserialize().into_generator();
        let mut write = SchemaSettings::draft2020_12().for_serialize().into_generator();
        let params: Vec<Value> = METHODS.iter().map(|m| (m.params_schema)(&mut read).to_value()).collect();
        let results: Vec<Value> = METHODS.iter().map(|m| (m.result_schema)(&mut write).to_value()).collect();
        let event = (EVENTS.item_schema)(&mut write).to_value();
        // Not part of the API: the body of the requests the server sends to webhooks.
        let webhook_event = write.subschema_for::<WebhookEvent>().to_value();
        // The `data` of the error an event stream ends with.
        let session_ended = write.subschema_for::<SessionEnded>().to_value();
        // The `data` of a `resumeFailed` error.
        let resume_failed = write.subschema_for::<ResumeFailed>().to_value();
        // The `data` of a `wrongNode` error (cluster mode).
        let wrong_node = write.subschema_for::<WrongNode>().to_value();
        // Not a method's params, but read by the server all the same (inside `join.token`).
        let token_claims = read.subschema_for::<TokenClaims>().to_value();
        let read_defs = read.take_definitions(true);
        let mut defs: Map<String, Value> =
            write.take_definitions(true).into_iter().map(|(k, v)| (k, close_objects(v))).collect();

        // A read type whose name is taken by a different written schema becomes `…Input`.
        let renamed: BTreeSet<String> = read_defs
            .iter()
            .filter(|(name, schema)| defs.get(*name).is_some_and(|w| w != *schema))
            .map(|(name, _)| name.clone())
            .collect();
        let rename = |v: Value| rename_refs(v, &renamed);
        for (name, schema) in read_defs {
            let name = if renamed.contains(&name) { format!("{name}{INPUT_SUFFIX}") } else { name };
            let schema = rename(schema);
            if let Some(existing) = defs.get(&name) {
                assert_eq!(existing, &schema, "two different schemas named {name}");
            }
            defs.insert(name, schema);
        }
        defs.insert(ERROR_OBJECT_DEF.to_owned(), error_object_schema());

        let methods = METHODS
            .iter()
            .zip(params)
            .zip(results)
            .map(|((info, params), result)| {
                let params = named(&mut defs, rename(params), info, "Params");
                let result = named(&mut defs, close_objects(result), info, "Result");
                MethodRefs { info, params, result }
            })
            .collect();
        let event = named_ref(&mut defs, event, "Event");
        let token_claims = named_ref(&mut defs, rename(token_claims), "TokenClaims");
        let webhook_event = named_ref(&mut defs, close_objects(webhook_event), "WebhookEvent");
        let session_ended = named_ref(&mut defs, close_objects(session_ended), "SessionEnded");
        let resume_failed = named_ref(&mut defs, close_objects(resume_failed), "ResumeFailed");
        let wrong_node = named_ref(&mut defs, close_objects(wrong_node), "WrongNode");
        Contract { defs, methods, event, token_claims, webhook_event, session_ended, resume_failed, wrong_node }
    }
}

/// `schema` as a `$ref` into `defs`: references stay, inline schemas get a def named
/// after the method (`JoinParams`-style) so that every params/result type has a name.
fn named(defs: &mut Map<String, Value>, schema: Value, info: &MethodInfo, suffix: &str) -> Value {
    let mut name = info.name.to_owned();
    name[..1].make_ascii_uppercase();
    named_ref(defs, schema, &format!("{name}{suffix}"))
}

fn named_ref(defs: &mut Map<String, Value>, schema: Value, name: &str) -> Value {
    if ref_name(&schema).is_some() {
        return schema;
    }
    assert!(!defs.contains_key(name), "inline schema would shadow the type {name}");
    defs.insert(name.to_owned(), schema);
    json!({ "$ref": format!("#/$defs/{name}") })
}

/// The def name of a plain `{"$ref": "#/$defs/Name"}` schema.
pub fn ref_name(schema: &Value) -> Option<&str> {
    let obj = schema.as_object()?;
    if obj.len() != 1 {
        return None;
    }
    obj.get("$ref")?.as_str()?.strip_prefix("#/$defs/")
}

/// Tightens a written (serialize-contract) schema to what the server really sends:
/// every object schema that says nothing about other members gets
/// `additionalProperties: false`, and optional members lose their `null` alternative
/// (an `Option` member that may be missing is skipped when `None`, never sent as `null`).
/// Schemas composed with `allOf` are left open, since closing one part would reject the
/// members of the others.
fn close_objects(mut schema: Value) -> Value {
    fn walk(v: &mut Value, in_all_of: bool) {
        match v {
            Value::Object(obj) => {
                let composed = obj.contains_key("allOf") || obj.contains_key("$ref");
                let is_object = obj.contains_key("properties") || obj.get("type").is_some_and(|t| t == "object");
                if !in_all_of
                    && !composed
                    && is_object
                    && !obj.contains_key("additionalProperties")
                    && !obj.contains_key("unevaluatedProperties")
                {
                    obj.insert("additionalProperties".into(), Value::Bool(false));
                }
                let required: BTreeSet<String> = obj
                    .get("required")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect();
                if let Some(Value::Object(properties)) = obj.get_mut("properties") {
                    for (name, property) in properties.iter_mut() {
                        if !required.contains(name) {
                            drop_null(property);
                        }
                    }
                }
                for (key, child) in obj.iter_mut() {
                    walk(child, key == "allOf");
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, in_all_of)),
            _ => {}
        }
    }
    walk(&mut schema, false);
    schema
}

/// Removes the `null` alternative schemars adds for `Option<T>`: `type: [T, "null"]`
/// becomes `type: T`; `anyOf: [S, {type: null}]` becomes `S` (keeping the description).
fn drop_null(schema: &mut Value) {
    let Value::Object(obj) = schema else { return };
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            obj.insert("type".into(), only);
        }
    }
    let is_null = |s: &Value| s.get("type").is_some_and(|t| t == "null") && s.as_object().is_some_and(|o| o.len() == 1);
    if let Some(Value::Array(options)) = obj.get_mut("anyOf")
        && options.iter().any(is_null)
    {
        options.retain(|s| !is_null(s));
        if options.len() == 1
            && let Value::Object(only) = options.remove(0)
        {
            obj.remove("anyOf");
            for (k, v) in only {
                obj.entry(k).or_insert(v);
            }
        }
    }
}

/// Points references to renamed defs at their `…Input` name.
fn rename_refs(mut schema: Value, renamed: &BTreeSet<String>) -> Value {
    fn walk(v: &mut Value, renamed: &BTreeSet<String>) {
        match v {
            Value::Object(obj) => {
                if let Some(Value::String(r)) = obj.get_mut("$ref")
                    && let Some(name) = r.strip_prefix("#/$defs/")
                    && renamed.contains(name)
                {
                    *r = format!("{r}{INPUT_SUFFIX}");
                }
                obj.values_mut().for_each(|c| walk(c, renamed));
            }
            Value::Array(items) => items.iter_mut().for_each(|c| walk(c, renamed)),
            _ => {}
        }
    }
    walk(&mut schema, renamed);
    schema
}

/// Replaces the `#/$defs/` prefix of every reference with `prefix`.
fn rewrite_refs(mut schema: Value, prefix: &str) -> Value {
    fn walk(v: &mut Value, prefix: &str) {
        match v {
            Value::Object(obj) => {
                if let Some(Value::String(r)) = obj.get_mut("$ref")
                    && let Some(name) = r.strip_prefix("#/$defs/")
                {
                    *r = format!("{prefix}{name}");
                }
                obj.values_mut().for_each(|c| walk(c, prefix));
            }
            Value::Array(items) => items.iter_mut().for_each(|c| walk(c, prefix)),
            _ => {}
        }
    }
    walk(&mut schema, prefix);
    schema
}

/// The JSON-RPC error object with every documented code.
fn error_object_schema() -> Value {
    let codes: Vec<Value> = ErrorCode::ALL
        .iter()
        .map(|c| json!({ "const": c.code(), "title": c.name(), "description": c.description() }))
        .chain(
            STANDARD_ERROR_CODES
                .iter()
                .map(|(code, name, description)| json!({ "const": code, "title": name, "description": description })),
        )
        .collect();
    json!({
        "description": "A JSON-RPC error object. `code` is one of the documented codes; `message` is for \
                        humans and may change; `data` is not used.",
        "type": "object",
        "properties": {
            "code": { "type": "integer", "format": "int32", "oneOf": codes },
            "message": { "type": "string" },
            "data": true,
        },
        "required": ["code", "message"],
        "additionalProperties": false,
    })
}

fn area_tag(area: Area) -> &'static str {
    match area {
        Area::Rooms => "rooms",
        Area::Transports => "transports",
        Area::Producers => "producers",
        Area::Consumers => "consumers",
        Area::Admin => "admin",
    }
}

fn error_refs(codes: &[ErrorCode], standard: &[i32]) -> Vec<Value> {
    let names = codes.iter().map(|c| c.name()).chain(
        standard
            .iter()
            .map(|s| STANDARD_ERROR_CODES.iter().find(|(c, ..)| c == s).map(|(_, n, _)| *n).expect("a standard code")),
    );
    names.map(|n| json!({ "$ref": format!("#/components/errors/{n}") })).collect()
}

fn openrpc_method(m: &MethodRefs, defs: &Map<String, Value>) -> Value {
    let components = |v: Value| rewrite_refs(v, "#/components/schemas/");
    let params: Vec<Value> = if m.info.no_params {
        Vec::new()
    } else {
        let name = ref_name(&m.params).expect("params are named");
        let object = &defs[name];
        let required: BTreeSet<&str> =
            object["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let properties = object["properties"].as_object().expect("params are an object with properties");
        properties
            .iter()
            .map(|(prop, schema)| {
                let mut schema = schema.clone();
                let description = schema.as_object_mut().and_then(|s| s.remove("description"));
                let mut d = json!({
                    "name": prop,
                    "required": required.contains(prop.as_str()),
                    "schema": components(schema),
                });
                if let Some(description) = description {
                    d["description"] = description;
                }
                d
            })
            .collect()
    };
    let result_name = ref_name(&m.result).expect("results are named");
    let codes = with_every_method_errors(m.info.errors);
    // Params that are not an object (or not the method's params type) are refused with
    // invalid params, also by methods that take none.
    let standard: &[i32] = &[INVALID_PARAMS, INTERNAL_ERROR];
    json!({
        "name": m.info.name,
        "summary": m.info.summary.trim(),
        "tags": [{ "name": area_tag(m.info.area) }],
        "paramStructure": "by-name",
        "params": params,
        "x-params": components(m.params.clone()),
        "result": { "name": result_name, "schema": components(m.result.clone()) },
        "errors": error_refs(&codes, standard),
    })
}

fn openrpc_subscription(event: &Value) -> [Value; 2] {
    let subscription_id = json!({
        "description": "Subscription id chosen by the server; pass it back unchanged.",
        "type": ["string", "integer"],
    });
    let subscribe = json!({
        "name": EVENTS.subscribe,
        "summary": EVENTS.summary,
        "description": format!(
            "Opens the session's event stream. Each event arrives as a notification \
             `{{\"jsonrpc\":\"2.0\",\"method\":\"{}\",\"params\":{{\"subscription\":<id>,\"result\":<Event>}}}}`; \
             the first one is always `welcome`. One stream per session. Clients must ignore event types they \
             do not know.",
            EVENTS.notification
        ),
        "tags": [{ "name": "rooms" }],
        "paramStructure": "by-name",
        "params": [],
        "result": { "name": "subscriptionId", "schema": subscription_id },
        "errors": error_refs(&with_every_method_errors(EVENTS.errors), &[INTERNAL_ERROR]),
        "x-notification": {
            "method": EVENTS.notification,
            "unsubscribe": EVENTS.unsubscribe,
            "params": {
                "type": "object",
                "properties": {
                    "subscription": subscription_id,
                    "result": rewrite_refs(event.clone(), "#/components/schemas/"),
                },
                "required": ["subscription", "result"],
            },
        },
    });
    let unsubscribe = json!({
        "name": EVENTS.unsubscribe,
        "summary": "Closes the session's event stream.",
        "tags": [{ "name": "rooms" }],
        "paramStructure": "by-position",
        "params": [{ "name": "subscription", "required": true, "schema": subscription_id }],
        "result": { "name": "unsubscribed", "schema": { "type": "boolean" } },
        "errors": error_refs(EVERY_METHOD_ERRORS, &[INVALID_PARAMS, INTERNAL_ERROR]),
    });
    [subscribe, unsubscribe]
}

/// Every `format` used anywhere in `schema`, for checking that validators know them.
pub fn formats(schema: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(obj) => {
                if let Some(Value::String(f)) = obj.get("format") {
                    out.insert(f.clone());
                }
                obj.values().for_each(|c| walk(c, out));
            }
            Value::Array(items) => items.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(schema, &mut out);
    out
}

/// Method name → (params def name, result def name), from a bundle built by
/// [`json_schema_bundle`]. Used by the SDK generator.
pub fn method_types(bundle: &Value) -> BTreeMap<String, (String, String)> {
    bundle[BUNDLE_METHODS_KEYWORD]["methods"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, m)| {
            Some((name.clone(), (ref_name(&m["params"])?.to_owned(), ref_name(&m["result"])?.to_owned())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_errors_come_from_the_table_in_numeric_order() {
        use ErrorCode::*;
        assert_eq!(method_errors("leave"), [NotJoined, LimitExceeded, Unavailable]);
        assert_eq!(method_errors("ping"), [LimitExceeded]);
        let doc = openrpc_document();
        let join = doc["methods"].as_array().into_iter().flatten().find(|m| m["name"] == "join").expect("join");
        let refs: Vec<&str> =
            join["errors"].as_array().into_iter().flatten().filter_map(|e| e["$ref"].as_str()).collect();
        assert_eq!(refs.len(), method_errors("join").len() + 2, "{refs:?}");
        assert!(refs.contains(&"#/components/errors/tokenExpired"));
    }

    #[test]
    fn no_unsafe_integers_on_the_wire() {
        let formats = formats(&json_schema_bundle());
        let known: BTreeSet<String> =
            ["uint8", "uint16", "uint32", "int32", "int64", "double"].iter().map(|s| s.to_string()).collect();
        assert!(formats.is_subset(&known), "unexpected formats: {:?}", formats.difference(&known).collect::<Vec<_>>());
    }

    #[test]
    fn every_reference_resolves() {
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(obj) => {
                    if let Some(Value::String(r)) = obj.get("$ref") {
                        out.push(r.clone());
                    }
                    obj.values().for_each(|c| refs(c, out));
                }
                Value::Array(items) => items.iter().for_each(|c| refs(c, out)),
                _ => {}
            }
        }
        let bundle = json_schema_bundle();
        let mut found = Vec::new();
        refs(&bundle, &mut found);
        for r in found {
            let name = r.strip_prefix("#/$defs/").unwrap_or_else(|| panic!("foreign reference {r}"));
            assert!(bundle["$defs"].get(name).is_some(), "dangling reference {r}");
        }
        let doc = openrpc_document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        for r in found {
            let target = r.strip_prefix("#/").unwrap_or_else(|| panic!("foreign reference {r}"));
            assert!(doc.pointer(&format!("/{target}")).is_some(), "dangling reference {r}");
        }
    }

    #[test]
    fn params_stay_open_and_written_objects_are_closed() {
        let bundle = json_schema_bundle();
        let defs = &bundle["$defs"];
        // Real clients send extra members (Chromium's `msid`, `dtx`, …): input stays open.
        for name in ["JoinParams", "ProduceParams", "RtpParametersInput", "RtpEncodingParametersInput"] {
            assert!(defs[name].get("additionalProperties").is_none(), "{name} must accept unknown members");
        }
        for name in ["JoinResult", "RtpParameters", "CreateTransportResult", "IceCandidate"] {
            assert_eq!(defs[name]["additionalProperties"], false, "{name} must be closed");
        }
        for variant in defs["Event"]["oneOf"].as_array().expect("Event is a oneOf") {
            assert_eq!(variant["additionalProperties"], false, "{variant}");
        }
    }

    #[test]
    fn every_method_maps_to_named_types() {
        let types = method_types(&json_schema_bundle());
        assert_eq!(types.len(), METHODS.len());
        assert_eq!(types["join"], ("JoinParams".to_owned(), "JoinResult".to_owned()));
        assert_eq!(types["consume"].0, "ConsumeParams");
    }
}
