//! Single-key operations over HTTP: GET, PUT, DELETE, CAS, ETags and TTL.

use crate::common;

use crate::common::{TestServer, etag, json, problem};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn put_get_delete_round_trip() {
    let server = TestServer::start(&[]).await;

    let created = server.put("key1", "value1").await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let first = etag(&created).expect("ETag on create");

    let read = server.get("/store/key1").await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(etag(&read).as_deref(), Some(first.as_str()));
    assert_eq!(read.text().await.expect("body"), "value1");

    let replaced = server.put("key1", "value2").await;
    assert_eq!(replaced.status(), StatusCode::NO_CONTENT);
    let second = etag(&replaced).expect("ETag on replace");
    assert_ne!(first, second);

    let deleted = server.delete("key1").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    problem(server.get("/store/key1").await, StatusCode::NOT_FOUND).await;
    problem(server.delete("key1").await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn put_takes_the_body_whatever_its_content_type() {
    let server = TestServer::start(&[]).await;
    for (i, content_type) in [
        Some("application/x-www-form-urlencoded"),
        Some("text/plain"),
        Some("application/json"),
        Some("application/octet-stream"),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("k{i}");
        let mut request = server
            .request(Method::PUT, &format!("/store/{key}"))
            .body(format!("value {i}"));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("PUT");
        assert_eq!(response.status(), StatusCode::CREATED, "{content_type:?}");
        let read = server.get(&format!("/store/{key}")).await;
        assert_eq!(read.text().await.expect("body"), format!("value {i}"));
    }
}

#[tokio::test]
async fn an_empty_body_is_an_empty_value() {
    let server = TestServer::start(&[]).await;
    let response = server
        .request(Method::PUT, "/store/empty")
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), StatusCode::CREATED);
    let read = server.get("/store/empty").await;
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.text().await.expect("body"), "");
}

#[tokio::test]
async fn invalid_values_and_keys_are_rejected() {
    let server = TestServer::start(&["--max-key-bytes", "8", "--max-value-bytes", "16"]).await;

    let not_utf8 = server
        .request(Method::PUT, "/store/bin")
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .expect("PUT");
    problem(not_utf8, StatusCode::BAD_REQUEST).await;

    problem(server.put("toolongkey", "v").await, StatusCode::BAD_REQUEST).await;
    problem(
        server.put("k", &"x".repeat(17)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(
        server.put("k", &"x".repeat(16)).await.status(),
        StatusCode::CREATED
    );

    // A chunked body (no Content-Length) over the limit is refused too.
    let chunked = put_chunked(&server, "/store/k", &[&b"xxxxxxxx"[..]; 4]).await;
    problem(chunked, StatusCode::PAYLOAD_TOO_LARGE).await;
    // Up to the limit, a value sent in several chunks is stored whole.
    let chunked = put_chunked(&server, "/store/whole", &[b"in two ", b"chunks!!!"]).await;
    assert_eq!(chunked.status(), StatusCode::CREATED);
    let stored = server.get("/store/whole").await;
    assert_eq!(stored.text().await.expect("body"), "in two chunks!!!");

    for path in ["/store/", "/watch_key/"] {
        let body = problem(server.get(path).await, StatusCode::BAD_REQUEST).await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("empty")
        );
    }
    problem(server.get("/store/%FF").await, StatusCode::BAD_REQUEST).await;
    problem(
        server.get("/store/toolongkey").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // Nothing was stored by the refused requests.
    problem(server.get("/store/bin").await, StatusCode::NOT_FOUND).await;
    assert_eq!(
        server.get("/store/k").await.text().await.expect("body"),
        "x".repeat(16)
    );
}

/// A PUT whose body is sent chunked (no Content-Length), one chunk each.
async fn put_chunked(
    server: &TestServer,
    path: &str,
    chunks: &[&'static [u8]],
) -> reqwest::Response {
    let chunks = chunks
        .iter()
        .map(|chunk| Ok::<_, std::io::Error>(bytes::Bytes::from_static(chunk)))
        .collect::<Vec<_>>();
    server
        .request(Method::PUT, path)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("PUT")
}

#[tokio::test]
async fn keys_are_percent_decoded_path_segments() {
    let server = TestServer::start(&[]).await;
    assert_eq!(
        server.put("cas%2Fx", "slash").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        server.put("hello%20world", "space").await.status(),
        StatusCode::CREATED
    );
    let batch = server
        .post_json(
            "/batch",
            &json!([{"method": "GET", "key": "cas/x"}, {"method": "GET", "key": "hello world"}]),
        )
        .await;
    let results = json(batch).await;
    assert_eq!(results[0]["value"], "slash");
    assert_eq!(results[1]["value"], "space");
    // An unencoded slash is another path, which does not exist.
    problem(
        server.get("/store/cas/x").await,
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
    problem(server.get("/store/a/b").await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let server = TestServer::start(&[]).await;
    let tag = etag(&server.put("k", "value").await);
    let head = server
        .request(Method::HEAD, "/store/k")
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(etag(&head), tag);
    assert_eq!(head.bytes().await.expect("body").len(), 0);
    let missing = server
        .request(Method::HEAD, "/store/missing")
        .send()
        .await
        .expect("HEAD");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn conditional_requests_follow_rfc_9110() {
    let server = TestServer::start(&[]).await;

    // If-None-Match: * creates only.
    let create_only = |value: &'static str| {
        server
            .request(Method::PUT, "/store/k")
            .header("If-None-Match", "*")
            .body(value)
            .send()
    };
    let created = create_only("one").await.expect("PUT");
    assert_eq!(created.status(), StatusCode::CREATED);
    let tag = etag(&created).expect("ETag");
    problem(
        create_only("two").await.expect("PUT"),
        StatusCode::PRECONDITION_FAILED,
    )
    .await;

    // If-None-Match with the current ETag on GET: 304, no body.
    let not_modified = server
        .request(Method::GET, "/store/k")
        .header("If-None-Match", tag.as_str())
        .send()
        .await
        .expect("GET");
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag(&not_modified).as_deref(), Some(tag.as_str()));
    let stale = server
        .request(Method::GET, "/store/k")
        .header("If-None-Match", "\"999999\"")
        .send()
        .await
        .expect("GET");
    assert_eq!(stale.status(), StatusCode::OK);

    // If-Match: a stale ETag fails with the current value and revision.
    let mismatch = server
        .request(Method::PUT, "/store/k")
        .header("If-Match", "\"999999\"")
        .body("three")
        .send()
        .await
        .expect("PUT");
    let body = problem(mismatch, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(body["value"], "one");
    assert_eq!(format!("\"{}\"", body["revision"]), tag);

    // A list that includes the current ETag matches.
    let matched = server
        .request(Method::PUT, "/store/k")
        .header("If-Match", format!("\"1000000\", {tag}"))
        .body("three")
        .send()
        .await
        .expect("PUT");
    assert_eq!(matched.status(), StatusCode::NO_CONTENT);
    let tag = etag(&matched).expect("ETag");

    // Weak tags never satisfy If-Match.
    let weak = server
        .request(Method::DELETE, "/store/k")
        .header("If-Match", format!("W/{tag}"))
        .send()
        .await
        .expect("DELETE");
    problem(weak, StatusCode::PRECONDITION_FAILED).await;

    let delete = server
        .request(Method::DELETE, "/store/k")
        .header("If-Match", tag.as_str())
        .send()
        .await
        .expect("DELETE");
    assert_eq!(delete.status(), StatusCode::NO_CONTENT);

    // An empty conditional header is no condition.
    let empty = server
        .request(Method::PUT, "/store/k2")
        .header("If-Match", "")
        .header("If-None-Match", " ")
        .body("five")
        .send()
        .await
        .expect("PUT");
    assert_eq!(empty.status(), StatusCode::CREATED);

    // If-Match: * on an absent key fails.
    let absent = server
        .request(Method::PUT, "/store/k")
        .header("If-Match", "*")
        .body("four")
        .send()
        .await
        .expect("PUT");
    problem(absent, StatusCode::PRECONDITION_FAILED).await;
    problem(server.get("/store/k").await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn compare_and_swap() {
    let server = TestServer::start(&[]).await;
    let cas = |expected: serde_json::Value, new: &str| {
        let body = json!({"expected": expected, "new": new});
        let server = &server;
        async move { server.post_json("/store/cas/key1", &body).await }
    };

    // Expected a value, key absent: 404.
    problem(cas(json!("old_value"), "x").await, StatusCode::NOT_FOUND).await;
    // expected null: create only.
    let created = cas(json!(null), "old_value").await;
    assert_eq!(created.status(), StatusCode::NO_CONTENT);
    let first = etag(&created).expect("ETag");
    let exists = problem(cas(json!(null), "y").await, StatusCode::PRECONDITION_FAILED).await;
    assert_eq!(exists["value"], "old_value");

    // The seed's example.
    let swapped = cas(json!("old_value"), "new_value").await;
    assert_eq!(swapped.status(), StatusCode::NO_CONTENT);
    assert_ne!(etag(&swapped).expect("ETag"), first);
    let body = problem(
        cas(json!("old_value"), "z").await,
        StatusCode::PRECONDITION_FAILED,
    )
    .await;
    assert_eq!(body["value"], "new_value");
    assert!(body["revision"].is_u64());
    assert_eq!(
        server.get("/store/key1").await.text().await.expect("body"),
        "new_value"
    );

    let status = server.status().await;
    assert_eq!(status["cas_operations"], 5);
    assert_eq!(status["successful_cas_operations"], 2);
    assert_eq!(status["failed_cas_operations"], 3);

    // Malformed requests.
    for malformed in [
        json!({"expected": "a"}),
        json!({"expected": "a", "new": 5}),
        json!({"expected": 1, "new": "b"}),
    ] {
        let response = server.post_json("/store/cas/key1", &malformed).await;
        problem(response, StatusCode::BAD_REQUEST).await;
    }
    let not_json = server
        .request(Method::POST, "/store/cas/key1")
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("POST");
    problem(not_json, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
}

#[tokio::test]
async fn ttl_validation() {
    let server = TestServer::start(&[]).await;
    for bad in ["0", "-1", "abc", "1.5", "99999999999999999999"] {
        let response = server
            .request(Method::PUT, &format!("/store/k?ttl={bad}"))
            .body("v")
            .send()
            .await
            .expect("PUT");
        problem(response, StatusCode::BAD_REQUEST).await;
    }
    let cas = server
        .post_json(
            "/store/cas/k",
            &json!({"expected": null, "new": "v", "ttl": 0}),
        )
        .await;
    problem(cas, StatusCode::BAD_REQUEST).await;
    problem(server.get("/store/k").await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn readyz_says_the_node_can_serve() {
    let server = TestServer::start(&[]).await;
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert_eq!(ready.text().await.expect("body"), "OK");
    let backend = if common::etcd::wanted() {
        "etcd"
    } else {
        "memory"
    };
    assert_eq!(server.status().await["backend"], backend);
}

#[tokio::test]
async fn status_reports_the_seed_fields_and_revisions() {
    let server = TestServer::start(&[]).await;
    server.put("a", "1").await;
    server.put("b", "2").await;
    server.get("/store/a").await;
    server.delete("b").await;
    let status = server.status().await;
    assert_eq!(status["status"], "OK");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime"].is_u64());
    assert!(
        status["server_time"]
            .as_str()
            .is_some_and(|t| t.len() >= 20 && t.contains('T'))
    );
    assert_eq!(status["total_keys"], 1);
    assert_eq!(status["put_operations"], 2);
    assert_eq!(status["get_operations"], 1);
    assert_eq!(status["delete_operations"], 1);
    assert_eq!(status["total_operations"], 4);
    assert_eq!(status["revision"], server.base + 3);
    assert_eq!(status["oldest_revision"], server.base + 1);
    assert_eq!(status["expired_keys"], 0);
    assert_eq!(status["watch_requests_count"], 0);
    assert_eq!(status["batch_requests_count"], 0);
}

/// A key sent plainly (`/store/k`) is served by the fast path; the same key
/// percent-encoded (`/store/%6B`) takes the long way through poem-openapi's
/// router. Two servers get the same requests, one each way, and must answer
/// alike (status, every header but `Date`, and body) every time.
#[tokio::test]
async fn the_fast_path_answers_as_the_operations_do() {
    let flags = ["--max-value-bytes", "8"];
    let (fast, long) = (
        TestServer::start(&flags).await,
        TestServer::start(&flags).await,
    );
    // The ETags of the first and second writes, on either backend.
    let tag = |n: u64| format!("\"{}\"", fast.base + n);
    let either = format!("{}, {}", tag(3), tag(2));
    let (first, second) = (tag(1), tag(2));
    /// Method, query, headers, body.
    type Case<'a> = (Method, &'a str, Vec<(&'a str, &'a str)>, &'a [u8]);
    let requests: Vec<Case> = vec![
        (Method::GET, "", vec![], b""),
        (Method::PUT, "", vec![], b"v1"),
        (Method::PUT, "", vec![], b"v2"),
        (Method::GET, "", vec![], b""),
        (Method::GET, "", vec![("If-None-Match", &either)], b""),
        (Method::GET, "", vec![("If-Match", &first)], b""),
        (Method::GET, "", vec![("If-Match", "*")], b""),
        (Method::PUT, "", vec![("If-Match", &first)], b"x"),
        (Method::PUT, "", vec![("If-None-Match", "*")], b"x"),
        (Method::PUT, "?ttl=60", vec![("If-Match", &second)], b"v3"),
        (Method::PUT, "", vec![], &[0xff, 0xfe]),
        (Method::PUT, "", vec![], b"too large"),
        (Method::PUT, "?ttl=0", vec![], b"x"),
        (Method::PUT, "", vec![("If-Match", "")], b"v4"),
        (Method::GET, "", vec![], b""),
        (Method::DELETE, "", vec![("If-Match", &first)], b""),
        (Method::DELETE, "", vec![("If-Fence", "nolock=1")], b""),
        (Method::DELETE, "", vec![], b""),
        (Method::DELETE, "", vec![], b""),
        (Method::GET, "", vec![], b""),
    ];
    for (method, query, headers, body) in &requests {
        let mut answers = Vec::new();
        for (server, path) in [(&fast, "/store/k"), (&long, "/store/%6B")] {
            let mut request = server
                .request(method.clone(), &format!("{path}{query}"))
                .body(body.to_vec());
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.send().await.expect("request");
            // Every header but the clock's.
            let mut seen: Vec<(String, String)> = response
                .headers()
                .iter()
                .filter(|(name, _)| *name != "date")
                .map(|(name, value)| {
                    let value = value.to_str().unwrap_or("(not text)");
                    (name.to_string(), value.to_owned())
                })
                .collect();
            seen.sort();
            let seen = (response.status(), seen);
            answers.push((seen, response.text().await.expect("body")));
        }
        let what = format!("{method} {query} {headers:?}");
        assert_eq!(answers[0], answers[1], "{what}: fast path vs poem-openapi");
    }
    assert_eq!(fast.status().await["revision"], fast.base + 5);
}

/// The create revision, version and ETag of a key, from a GET's headers.
async fn meta_of(server: &TestServer, key: &str) -> (u64, u64, u64) {
    let read = server.get(&format!("/store/{key}")).await;
    assert_eq!(read.status(), StatusCode::OK);
    let header = |name: &str| -> u64 {
        read.headers()[name]
            .to_str()
            .ok()
            .and_then(|text| text.parse().ok())
            .unwrap_or_else(|| panic!("{name} is a number"))
    };
    (
        header("kv-create-revision"),
        header("kv-version"),
        common::revision(&read),
    )
}

#[tokio::test]
async fn a_key_carries_its_create_revision_and_version_as_etcd_does() {
    let server = TestServer::start(&[]).await;
    let created = common::revision(&server.put("k", "1").await);
    assert_eq!(meta_of(&server, "k").await, (created, 1, created));

    let second = common::revision(&server.put("k", "2").await);
    let swapped = server
        .post_json("/store/cas/k", &json!({"expected": "2", "new": "3"}))
        .await;
    let swapped = common::revision(&swapped);
    let batch = server
        .post_json(
            "/batch",
            &json!([{"method": "PUT", "key": "k", "value": "4"}]),
        )
        .await;
    assert_eq!(batch.status(), StatusCode::OK);
    let (create, version, revision) = meta_of(&server, "k").await;
    assert!(created < second && second < swapped && swapped < revision);
    assert_eq!(
        (create, version),
        (created, 4),
        "every write counts, the create revision stays"
    );

    // Deleted and written again: a new key as far as etcd's model goes.
    server.delete("k").await;
    let again = common::revision(&server.put("k", "5").await);
    assert_eq!(meta_of(&server, "k").await, (again, 1, again));

    let listing = json(server.get("/store?prefix=k").await).await;
    assert_eq!(
        listing["items"][0],
        json!({"key": "k", "value": "5", "revision": again, "create_revision": again, "version": 1})
    );
}
