//! The committed spec under `openapi/` is what the code generates, and the
//! server serves the same spec and Swagger UI.
//!
//! After an API change, refresh the committed files with
//! `KV_UPDATE_SPEC=1 cargo test --test it -- openapi::` and commit them with the change.

use std::path::Path;

use crate::common::TestServer;
use kv_store::api;
use reqwest::StatusCode;

fn check(file: &str, generated: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("openapi")
        .join(file);
    if std::env::var_os("KV_UPDATE_SPEC").is_some() {
        std::fs::write(&path, generated).expect("write the spec");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/{file} differs from what the code generates; refresh it with \
         `KV_UPDATE_SPEC=1 cargo test --test it -- openapi::` and commit it with the API change"
    );
}

#[test]
fn committed_spec_matches_the_code() {
    check("kv-store.json", &api::spec_json());
    check("kv-store.yaml", &api::spec_yaml());
    check("watch-event.schema.json", &api::watch_event_schema());
}

#[test]
fn every_operation_is_documented_for_generators() {
    let spec: serde_json::Value = serde_json::from_str(&api::spec_json()).expect("JSON spec");
    let paths = spec["paths"].as_object().expect("paths");
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            operations += 1;
            let name = format!("{method} {path}");
            for field in ["operationId", "summary", "description", "tags"] {
                assert!(!operation[field].is_null(), "{name} has no {field}");
            }
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                !responses.contains_key("default"),
                "{name} has a default response"
            );
            // Every error is the one Problem, each status with an example
            // of its own (what Swagger UI shows under it).
            for (status, response) in responses
                .iter()
                .filter(|(status, _)| status.starts_with('4') || status.starts_with('5'))
            {
                let schema = &response["content"]["application/problem+json"]["schema"];
                assert_eq!(
                    schema["allOf"],
                    serde_json::json!([{"$ref": "#/components/schemas/Problem"}]),
                    "{name} {status}"
                );
                let example = &schema["example"];
                assert_eq!(example["status"].to_string(), *status, "{name} {status}");
                let kind = example["type"].as_str().unwrap_or_default();
                assert!(kind.starts_with("urn:kv-store:problem:"), "{name} {status}");
            }
            if let Some(content) = operation["requestBody"]["content"].as_object() {
                assert_eq!(content.len(), 1, "{name}: one request media type");
            }
        }
    }
    assert_eq!(operations, 29);
}

#[tokio::test]
async fn the_server_serves_the_spec_and_swagger_ui() {
    let server = TestServer::start(&[]).await;
    let json = server.get("/openapi.json").await;
    assert_eq!(json.status(), StatusCode::OK);
    assert_eq!(json.text().await.expect("body"), api::spec_json());
    let yaml = server.get("/openapi.yaml").await;
    assert_eq!(yaml.status(), StatusCode::OK);
    assert_eq!(yaml.text().await.expect("body"), api::spec_yaml());
    let docs = server.get("/docs").await;
    assert_eq!(docs.status(), StatusCode::OK);
    let html = docs.text().await.expect("body");
    assert!(html.contains("swagger"), "Swagger UI page");
}

#[test]
fn the_route_table_and_the_spec_name_the_same_operations() {
    let spec: serde_json::Value = serde_json::from_str(&api::spec_json()).expect("JSON spec");
    let mut documented = std::collections::BTreeSet::new();
    for (path, operations) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in operations.as_object().expect("operations") {
            let id = operation["operationId"].as_str().expect("an operationId");
            documented.insert((method.to_uppercase(), path.clone(), id.to_owned()));
        }
    }
    let table: std::collections::BTreeSet<(String, String, String)> = api::routes::ROUTES
        .iter()
        .map(|route| {
            (
                route.method.to_string(),
                route.template.to_owned(),
                route.operation.to_owned(),
            )
        })
        .collect();
    let missing: Vec<_> = documented.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "in the spec, not the route table: {missing:?}"
    );
    let extra: Vec<_> = table.difference(&documented).collect();
    assert!(
        extra.is_empty(),
        "in the route table, not the spec: {extra:?}"
    );
}
