//! Atomic batches over HTTP.

use crate::common::{TestServer, json, problem};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_batch_answers_one_result_per_op() {
    let server = TestServer::start(&[]).await;
    server.put("keep", "x").await;
    server.put("old", "y").await;
    server.put("key1", "w").await;
    let before = server.status().await["revision"]
        .as_u64()
        .expect("revision");
    let response = server
        .post_json(
            "/batch",
            &json!([
                {"method": "PUT", "key": "put", "value": "v", "ttl": 60},
                {"method": "GET", "key": "keep"},
                {"method": "CAS", "key": "key1", "expected": "w", "value": "z"},
                {"method": "CAS", "key": "new", "expected": null, "value": "n"},
                {"method": "PUT", "key": "empty"},
                {"method": "DELETE", "key": "old"},
                {"method": "DELETE", "key": "missing"},
                {"method": "GET", "key": "absent"}
            ]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let results = json(response).await;
    let at = before + 1;
    assert_eq!(
        results,
        json!([
            {"status": 201, "revision": at},
            {"status": 200, "value": "x", "revision": before - 2},
            {"status": 204, "revision": at},
            {"status": 204, "revision": at},
            {"status": 201, "revision": at},
            {"status": 204, "revision": at},
            {"status": 404},
            {"status": 404}
        ]),
        "every write of the batch at one revision"
    );
    assert_eq!(
        server.get("/store/key1").await.text().await.expect("body"),
        "z"
    );
    assert_eq!(
        server.get("/store/empty").await.text().await.expect("body"),
        ""
    );
    let status = server.status().await;
    assert_eq!(status["batch_requests_count"], 1);
    assert_eq!(status["revision"], at);
}

#[tokio::test]
async fn a_batch_names_each_key_once() {
    let server = TestServer::start(&[]).await;
    let body = problem(
        server
            .post_json(
                "/batch",
                &json!([
                    {"method": "PUT", "key": "a", "value": "1"},
                    {"method": "PUT", "key": "b", "value": "1"},
                    {"method": "GET", "key": "a"}
                ]),
            )
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        body["detail"],
        "operation 2: key \"a\" is already in the batch; a batch names each key once"
    );
    assert_eq!(server.get("/store/b").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_failed_cas_applies_nothing() {
    let server = TestServer::start(&[]).await;
    server.put("a", "1").await;
    let before = server.status().await["revision"].clone();
    let response = server
        .post_json(
            "/batch",
            &json!([
                {"method": "PUT", "key": "b", "value": "2"},
                {"method": "DELETE", "key": "d"},
                {"method": "CAS", "key": "a", "expected": "2", "value": "3"},
                {"method": "CAS", "key": "c", "expected": "x", "value": "3"}
            ]),
        )
        .await;
    let body = problem(response, StatusCode::CONFLICT).await;
    assert_eq!(
        body["results"],
        json!([{"status": 424}, {"status": 424}, {"status": 412}, {"status": 404}])
    );
    assert_eq!(server.get("/store/b").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        server.status().await["revision"],
        before,
        "no revision taken"
    );
}

#[tokio::test]
async fn readers_never_see_part_of_a_batch() {
    let server = TestServer::start(&[]).await;
    // Every batch writes the same number to both keys; a reader batch must
    // always see the two equal, at the same revision.
    let writer = {
        let (client, url) = (server.client.clone(), server.url("/batch"));
        tokio::spawn(async move {
            for n in 0..200 {
                let ops = json!([
                    {"method": "PUT", "key": "x", "value": n.to_string()},
                    {"method": "PUT", "key": "y", "value": n.to_string()}
                ]);
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(ops.to_string())
                    .send()
                    .await
                    .expect("batch");
                assert_eq!(response.status(), StatusCode::OK);
            }
        })
    };
    let read = json!([{"method": "GET", "key": "x"}, {"method": "GET", "key": "y"}]);
    while !writer.is_finished() {
        let results = json(server.post_json("/batch", &read).await).await;
        assert_eq!(results[0]["value"], results[1]["value"], "{results}");
        assert_eq!(results[0]["revision"], results[1]["revision"], "{results}");
    }
    writer.await.expect("writer");
}

#[tokio::test]
async fn batches_are_validated() {
    let server = TestServer::start(&["--max-batch-ops", "2"]).await;
    let get = json!({"method": "GET", "key": "a"});
    problem(
        server.post_json("/batch", &json!([get, get, get])).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    for bad in [
        json!([{"method": "FROB", "key": "a"}]),
        json!([{"method": "GET", "key": ""}]),
        json!([{"method": "GET"}]),
        json!([{"method": "GET", "key": 5}]),
        json!([{"method": "PUT", "key": "a", "value": true}]),
        json!([{"method": "GET", "key": "a", "ttl": 6_598_271_035_371_912_192_u64}]),
        json!([{"method": "DELETE", "key": "a", "ttl": 0}]),
        json!({"method": "GET", "key": "a"}),
    ] {
        let body = problem(
            server.post_json("/batch", &bad).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(!body["detail"].as_str().unwrap_or_default().is_empty());
    }
    let empty = server.post_json("/batch", &json!([])).await;
    assert_eq!(empty.status(), StatusCode::OK);
    assert_eq!(json(empty).await, json!([]));
}

#[tokio::test]
async fn request_bodies_are_bounded() {
    let server =
        TestServer::start(&["--max-request-bytes", "1000", "--max-value-bytes", "2000"]).await;
    let ops: Vec<_> = (0..100)
        .map(|i| json!({"method": "PUT", "key": format!("k{i}"), "value": "v"}))
        .collect();
    let big = json!(ops);
    problem(
        server.post_json("/batch", &big).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;

    // Without Content-Length (chunked), the bound holds while reading.
    let body = big.to_string().into_bytes();
    let chunks = futures_util::stream::iter(
        body.chunks(100)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let chunked = server
        .request(reqwest::Method::POST, "/batch")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("POST");
    problem(chunked, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(
        server.get("/store/k0").await.status(),
        StatusCode::NOT_FOUND,
        "nothing applied"
    );

    // A PUT may still carry a value up to --max-value-bytes.
    assert_eq!(
        server.put("k", &"x".repeat(2000)).await.status(),
        StatusCode::CREATED
    );
    let small = json!([{"method": "GET", "key": "k"}]);
    assert_eq!(
        server.post_json("/batch", &small).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_batch_answer_leaves_out_values_past_its_cap() {
    let server = TestServer::start(&["--max-batch-answer-bytes", "10"]).await;
    for key in ["a", "b", "c", "d"] {
        server
            .put(key, &format!("{key}{key}{key}{key}{key}{key}"))
            .await;
    }
    let huge = "h".repeat(64);
    server.put("huge", &huge).await;
    let response = server
        .post_json(
            "/batch",
            &json!([
                {"method": "GET", "key": "huge"},
                {"method": "PUT", "key": "w", "value": "new"},
                {"method": "GET", "key": "a"},
            ]),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let results = json(response).await;
    // The first value always fits; the next one would pass the cap, and
    // the write is done all the same.
    assert_eq!(results[0]["value"], huge.as_str());
    assert_eq!(results[1]["status"], 201);
    assert_eq!(results[2]["status"], 413);
    assert!(results[2].get("value").is_none(), "{results}");
    assert_eq!(server.get("/store/w").await.status(), StatusCode::OK);

    let response = server
        .post_json(
            "/batch",
            &json!([
                {"method": "GET", "key": "a"},
                {"method": "GET", "key": "missing"},
                {"method": "GET", "key": "b"},
                {"method": "GET", "key": "c"},
            ]),
        )
        .await;
    let results = json(response).await;
    let statuses: Vec<&serde_json::Value> = results
        .as_array()
        .expect("results")
        .iter()
        .map(|result| &result["status"])
        .collect();
    assert_eq!(
        statuses,
        [&json!(200), &json!(404), &json!(413), &json!(413)]
    );
    assert!(results[2]["revision"].is_u64(), "the key's revision stays");
}
