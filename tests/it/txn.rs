//! Transactions over HTTP: guards of every kind, both branches, one
//! revision, isolation under concurrent writers.

use crate::common::{Sse, TestServer, json, problem};
use reqwest::StatusCode;
use serde_json::{Value as Json, json};

async fn txn(server: &TestServer, body: Json) -> Json {
    let response = server.post_json("/txn", &body).await;
    assert_eq!(response.status(), StatusCode::OK, "{body}");
    json(response).await
}

/// Runs `guards` alone and says whether they held.
async fn holds(server: &TestServer, guards: Json) -> bool {
    let answer = txn(server, json!({"guards": guards})).await;
    answer["succeeded"].as_bool().expect("succeeded")
}

#[tokio::test]
async fn every_guard_and_operator_on_keys_and_prefixes() {
    let server = TestServer::start(&[]).await;
    let base = server.base;
    // k: created at base+1, rewritten at base+2 (version 2); p/a and p/b
    // at base+3.
    txn(
        &server,
        json!({"then": [{"op": "PUT", "key": "k", "value": "b"}]}),
    )
    .await;
    txn(
        &server,
        json!({"then": [{"op": "PUT", "key": "k", "value": "b"}]}),
    )
    .await;
    txn(
        &server,
        json!({"then": [
            {"op": "PUT", "key": "p/a", "value": "x"},
            {"op": "PUT", "key": "p/b", "value": "y"}
        ]}),
    )
    .await;
    let (created, modified) = (base + 1, base + 2);
    let key = |compare: &str, field: &str, operand: Json| {
        let mut guard = json!({"key": "k", "compare": compare});
        guard[field] = operand;
        json!([guard])
    };
    let cases = [
        (key("EQUAL", "value", json!("b")), true),
        (key("NOT_EQUAL", "value", json!("b")), false),
        (key("LESS", "value", json!("c")), true),
        (key("GREATER", "value", json!("c")), false),
        (key("EQUAL", "mod_revision", json!(modified)), true),
        (key("EQUAL", "mod_revision", json!(created)), false),
        (key("NOT_EQUAL", "mod_revision", json!(created)), true),
        (key("LESS", "mod_revision", json!(modified)), false),
        (key("GREATER", "mod_revision", json!(created)), true),
        (key("EQUAL", "create_revision", json!(created)), true),
        (key("GREATER", "create_revision", json!(created)), false),
        (key("EQUAL", "version", json!(2)), true),
        (key("LESS", "version", json!(2)), false),
        (key("GREATER", "version", json!(1)), true),
        (json!([{"key": "k", "compare": "EXISTS"}]), true),
        (json!([{"key": "k", "compare": "ABSENT"}]), false),
        (json!([{"key": "none", "compare": "ABSENT"}]), true),
        (json!([{"key": "none", "compare": "EXISTS"}]), false),
        // An absent key: numbers are 0, a value comparison fails.
        (
            json!([{"key": "none", "compare": "EQUAL", "version": 0}]),
            true,
        ),
        (
            json!([{"key": "none", "compare": "NOT_EQUAL", "value": "x"}]),
            false,
        ),
        // A prefix: every key under it.
        (
            json!([{"prefix": "p/", "compare": "EQUAL", "mod_revision": base + 3}]),
            true,
        ),
        (
            json!([{"prefix": "p/", "compare": "LESS", "value": "y"}]),
            false,
        ),
        (
            json!([{"prefix": "p/", "compare": "GREATER", "value": "w"}]),
            true,
        ),
        (json!([{"prefix": "p/", "compare": "ABSENT"}]), false),
        (json!([{"prefix": "q/", "compare": "ABSENT"}]), true),
        (
            json!([{"prefix": "q/", "compare": "LESS", "mod_revision": 1}]),
            true,
        ),
        (
            json!([{"prefix": "q/", "compare": "EQUAL", "value": ""}]),
            false,
        ),
        // All must hold.
        (
            json!([
                {"key": "k", "compare": "EXISTS"},
                {"key": "none", "compare": "EXISTS"}
            ]),
            false,
        ),
        (json!([]), true),
    ];
    for (guards, expected) in cases {
        assert_eq!(holds(&server, guards.clone()).await, expected, "{guards}");
    }
}

#[tokio::test]
async fn the_branch_the_guards_choose_runs_at_one_revision() {
    let server = TestServer::start(&[]).await;
    let base = server.base;
    let setup = txn(
        &server,
        json!({"then": [
            {"op": "PUT", "key": "jobs/1", "value": "a"},
            {"op": "PUT", "key": "jobs/2", "value": "b"},
            {"op": "PUT", "key": "jobs/3", "value": "c"},
            {"op": "PUT", "key": "mode", "value": "slow"}
        ]}),
    )
    .await;
    assert_eq!(setup["revision"], base + 1);
    let mut watch = Sse::new(
        server
            .get(&format!("/watch?prefix=&since={}", base + 1))
            .await,
    );
    let guarded = |revision: u64| {
        json!({
            "guards": [{"key": "mode", "compare": "EQUAL", "mod_revision": revision}],
            "then": [
                {"op": "PUT", "key": "mode", "value": "fast", "ttl": 600},
                {"op": "GET", "key": "mode"},
                {"op": "DELETE", "key": "jobs/1"},
                {"op": "DELETE", "key": "jobs/9"},
                {"op": "GET", "prefix": "jobs/", "limit": 2}
            ],
            "else": [
                {"op": "GET", "key": "mode"},
                {"op": "DELETE", "prefix": "jobs/"},
                {"op": "PUT", "key": "lost", "value": "yes"}
            ]
        })
    };
    let at = base + 2;
    let then = txn(&server, guarded(base + 1)).await;
    assert_eq!(
        then,
        json!({
            "succeeded": true,
            "revision": at,
            "results": [
                {"status": 204, "revision": at},
                // Reads see the store as the guards did.
                {"status": 200, "value": "slow", "revision": base + 1,
                 "create_revision": base + 1, "version": 1},
                {"status": 204, "revision": at},
                {"status": 404},
                {"status": 200, "more": true, "keys": [
                    {"key": "jobs/1", "value": "a", "revision": base + 1,
                     "create_revision": base + 1, "version": 1},
                    {"key": "jobs/2", "value": "b", "revision": base + 1,
                     "create_revision": base + 1, "version": 1}
                ]}
            ]
        })
    );
    // The same guard again fails: `mode` moved on. The else branch runs.
    let otherwise = txn(&server, guarded(base + 1)).await;
    assert_eq!(
        otherwise,
        json!({
            "succeeded": false,
            "revision": at + 1,
            "results": [
                {"status": 200, "value": "fast", "revision": at,
                 "create_revision": base + 1, "version": 2},
                {"status": 200, "deleted": 2},
                {"status": 201, "revision": at + 1}
            ]
        })
    );
    let listed = json(server.get("/store?prefix=").await).await;
    let keys: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["lost", "mode"]);

    // Watchers see each transaction's writes at its one revision, in
    // operation order.
    let events = watch.take(5).await;
    let seen: Vec<_> = events
        .iter()
        .map(|event| (event.id, event.part, event.key(), event.value()))
        .collect();
    assert_eq!(
        seen,
        [
            (Some(at), Some(0), "mode", Some("fast")),
            (Some(at), Some(1), "jobs/1", None),
            (Some(at + 1), Some(0), "jobs/2", None),
            (Some(at + 1), Some(1), "jobs/3", None),
            (Some(at + 1), Some(2), "lost", Some("yes")),
        ]
    );
}

#[tokio::test]
async fn a_transaction_that_only_reads_writes_nothing() {
    let server = TestServer::start(&[]).await;
    let base = server.base;
    txn(
        &server,
        json!({"then": [{"op": "PUT", "key": "a", "value": "1"}]}),
    )
    .await;
    let answer = txn(
        &server,
        json!({"guards": [{"key": "a", "compare": "EXISTS"}],
               "then": [{"op": "GET", "key": "a"}, {"op": "DELETE", "key": "gone"}]}),
    )
    .await;
    assert_eq!(answer["succeeded"], true);
    assert_eq!(answer["revision"], base + 1, "the revision its reads saw");
    assert_eq!(server.status().await["revision"], base + 1);
}

#[tokio::test]
async fn a_malformed_transaction_is_refused_before_anything_runs() {
    let server = TestServer::start(&["--max-txn-ops", "4"]).await;
    let cases = [
        (
            json!({"then": [{"op": "PUT", "key": "a"}, {"op": "DELETE", "key": "a"}]}),
            StatusCode::BAD_REQUEST,
            "then[1]: key \"a\" is written twice in one branch",
        ),
        (
            json!({"else": [{"op": "DELETE", "prefix": "a/"}, {"op": "PUT", "key": "a/b"}]}),
            StatusCode::BAD_REQUEST,
            "else[0]: prefix \"a/\" overlaps another write in one branch",
        ),
        (
            json!({"guards": [{"prefix": "a/", "compare": "EXISTS"}]}),
            StatusCode::BAD_REQUEST,
            "guards[0]: EXISTS is for a key",
        ),
        (
            json!({"guards": [{"key": "a", "compare": "EQUAL"}]}),
            StatusCode::BAD_REQUEST,
            "guards[0]: a comparison takes exactly one operand",
        ),
        (
            json!({"guards": [{"key": "a", "compare": "EQUAL", "version": 1, "value": "x"}]}),
            StatusCode::BAD_REQUEST,
            "guards[0]: a comparison takes exactly one operand",
        ),
        (
            json!({"guards": [{"key": "a", "compare": "ABSENT", "version": 1}]}),
            StatusCode::BAD_REQUEST,
            "guards[0]: EXISTS and ABSENT take no operand",
        ),
        (
            json!({"guards": [{"key": "a", "prefix": "b", "compare": "ABSENT"}]}),
            StatusCode::BAD_REQUEST,
            "guards[0]: give exactly one of `key` and `prefix`",
        ),
        (
            json!({"then": [{"op": "PUT", "prefix": "a/"}]}),
            StatusCode::BAD_REQUEST,
            "then[0]: PUT takes a `key`, not a `prefix`",
        ),
        (
            json!({"then": [{"op": "DELETE", "prefix": ""}]}),
            StatusCode::BAD_REQUEST,
            "then[0]: the prefix is empty",
        ),
        (
            json!({"then": [{"op": "GET", "key": "a", "limit": 3}]}),
            StatusCode::BAD_REQUEST,
            "then[0]: `limit` is for GET of a prefix",
        ),
        (
            json!({"then": [{"op": "GET", "key": "a", "ttl": 3}]}),
            StatusCode::BAD_REQUEST,
            "then[0]: `ttl` and `lease` are for PUT",
        ),
        (
            json!({"guards": [{"key": "a", "compare": "ABSENT"}],
                   "then": [{"op": "PUT", "key": "a"}, {"op": "PUT", "key": "b"}],
                   "else": [{"op": "GET", "key": "a"}, {"op": "GET", "key": "b"}]}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "the transaction has 5 guards and operations; the limit is 4 (--max-txn-ops)",
        ),
    ];
    for (body, status, detail) in cases {
        let response = server.post_json("/txn", &body).await;
        let problem = problem(response, status).await;
        let said = problem["detail"].as_str().expect("detail");
        assert!(said.starts_with(detail), "{body}: {said}");
    }
    assert_eq!(
        server.status().await["revision"],
        server.base,
        "nothing ran"
    );
}

#[tokio::test]
async fn a_large_answer_is_cut_as_a_batch_answer_is() {
    let server = TestServer::start(&["--max-batch-answer-bytes", "10"]).await;
    let puts: Vec<Json> = (0..4)
        .map(|n| json!({"op": "PUT", "key": format!("big/{n}"), "value": "12345678"}))
        .collect();
    txn(&server, json!({"then": puts})).await;
    let answer = txn(
        &server,
        json!({"then": [{"op": "GET", "prefix": "big/"}, {"op": "GET", "key": "big/3"}]}),
    )
    .await;
    let results = &answer["results"];
    assert_eq!(results[0]["keys"].as_array().expect("keys").len(), 1);
    assert_eq!(results[0]["more"], true, "cut, and says so");
    assert_eq!(results[1]["status"], 413);
    assert_eq!(results[1].get("value"), None);
}

/// Eight writers add to one counter, each guarding its write on the
/// revision it read: no increment may be lost, and the else branch hands
/// back the counter's state for the next try.
#[tokio::test]
async fn guarded_increments_from_eight_writers_lose_nothing() {
    let server = std::sync::Arc::new(TestServer::start(&[]).await);
    const WRITERS: u64 = 8;
    const EACH: u64 = 25;
    txn(
        &server,
        json!({"then": [{"op": "PUT", "key": "n", "value": "0"}]}),
    )
    .await;
    let first = txn(&server, json!({"then": [{"op": "GET", "key": "n"}]})).await;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let server = server.clone();
            let mut seen = first["results"][0].clone();
            tokio::spawn(async move {
                let mut done = 0;
                while done < EACH {
                    let value: u64 = seen["value"].as_str().expect("value").parse().expect("n");
                    let answer = txn(
                        &server,
                        json!({
                            "guards": [{"key": "n", "compare": "EQUAL",
                                        "mod_revision": seen["revision"]}],
                            "then": [{"op": "PUT", "key": "n", "value": (value + 1).to_string()}],
                            "else": [{"op": "GET", "key": "n"}]
                        }),
                    )
                    .await;
                    if answer["succeeded"] == true {
                        done += 1;
                        seen = json!({"value": (value + 1).to_string(),
                                      "revision": answer["revision"]});
                    } else {
                        seen = answer["results"][0].clone();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    let last = txn(&server, json!({"then": [{"op": "GET", "key": "n"}]})).await;
    assert_eq!(
        last["results"][0]["value"],
        (WRITERS * EACH).to_string(),
        "every increment applied exactly once"
    );
}
