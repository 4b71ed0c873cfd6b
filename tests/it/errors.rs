//! Errors of every kind are problem+json; rate limiting.

use crate::common;

use crate::common::{TestServer, problem};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn framework_errors_are_problems() {
    let server = TestServer::start(&[]).await;
    problem(server.get("/no/such/route").await, StatusCode::NOT_FOUND).await;
    let wrong_method = server
        .request(Method::PATCH, "/store/k")
        .send()
        .await
        .expect("PATCH");
    assert_eq!(wrong_method.headers()["allow"], "GET, PUT, DELETE, HEAD");
    problem(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await;
    let get_batch = server.get("/batch").await;
    assert_eq!(get_batch.headers()["allow"], "POST");
    problem(get_batch, StatusCode::METHOD_NOT_ALLOWED).await;
    let bad_json = server
        .request(Method::POST, "/batch")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("POST");
    problem(bad_json, StatusCode::BAD_REQUEST).await;
    let no_content_type = server
        .request(Method::POST, "/batch")
        .body("[]")
        .send()
        .await
        .expect("POST");
    problem(no_content_type, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;
    let bad_param = server
        .request(Method::PUT, "/store/k?ttl=soon")
        .body("v")
        .send()
        .await
        .expect("PUT");
    let body = problem(bad_param, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap_or_default().contains("ttl"));
}

#[tokio::test]
async fn over_the_rate_limit_is_429_with_retry_after() {
    let server = TestServer::start(&["--rate-limit", "1", "--rate-burst", "2"]).await;
    // At one request per second, twenty back-to-back requests cannot all pass.
    let mut limited = None;
    for _ in 0..20 {
        let response = server.get("/status").await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
    }
    let limited = limited.expect("a request over the limit");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("numeric Retry-After");
    assert!(retry_after >= 1);
    problem(limited, StatusCode::TOO_MANY_REQUESTS).await;

    // Health checks are never limited.
    for _ in 0..20 {
        assert_eq!(server.get("/healthz").await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn forwarded_for_is_used_only_when_trusted() {
    let server = TestServer::start(&[
        "--rate-limit",
        "1",
        "--rate-burst",
        "1",
        "--trust-forwarded-for",
    ])
    .await;
    // Each client behind the proxy has its own budget.
    for n in 1..=10 {
        let response = server
            .request(Method::GET, "/status")
            .header("x-forwarded-for", format!("203.0.113.7, 10.0.0.{n}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), StatusCode::OK, "client {n}");
    }

    let untrusting = TestServer::start(&["--rate-limit", "1", "--rate-burst", "1"]).await;
    let mut statuses = Vec::new();
    for n in 1..=10 {
        let response = untrusting
            .request(Method::GET, "/status")
            .header("x-forwarded-for", format!("10.0.0.{n}"))
            .send()
            .await
            .expect("GET");
        statuses.push(response.status());
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "the header is ignored"
    );
}

#[tokio::test]
async fn a_bad_ttl_reads_the_same_in_the_query_and_in_a_batch() {
    let server = TestServer::start(&[]).await;
    for ttl in ["0", "abc", "1.5", "-1", "3153600001"] {
        let response = server
            .request(Method::PUT, &format!("/store/k?ttl={ttl}"))
            .body("v")
            .send()
            .await
            .expect("PUT");
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            body["detail"],
            format!("ttl {ttl} is not a whole number of seconds from 1 to 3153600000")
        );
    }
    let batch = server
        .post_json(
            "/batch",
            &serde_json::json!([{"method": "PUT", "key": "a", "value": "1", "ttl": 0}]),
        )
        .await;
    let body = problem(batch, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        body["detail"],
        "operation 0: ttl 0 is not a whole number of seconds from 1 to 3153600000"
    );
    let watch = server.get("/watch_key/k?since=soon").await;
    let body = problem(watch, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        body["detail"],
        "since soon is not a revision (a whole number from 0)"
    );
}

#[tokio::test]
async fn broken_percent_encodings_in_a_key_are_400() {
    let server = TestServer::start(&[]).await;
    for path in ["/store/%ZZ", "/store/a%2", "/store/cas/%G1"] {
        let body = problem(server.get(path).await, StatusCode::BAD_REQUEST).await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("broken percent-encoding"),
            "{path}: {detail}"
        );
    }
    let response = server
        .request(Method::PUT, "/store/%C3%28")
        .body("v")
        .send()
        .await
        .expect("PUT");
    let body = problem(response, StatusCode::BAD_REQUEST).await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("not UTF-8"), "{detail}");
    // A literal % is sent as %25, and a valid encoding still works.
    assert_eq!(server.put("%25ZZ", "v").await.status(), StatusCode::CREATED);
    assert_eq!(
        server
            .get("/store/%25ZZ")
            .await
            .text()
            .await
            .ok()
            .as_deref(),
        Some("v")
    );
    assert_eq!(
        server.put("%C3%A9", "v").await.status(),
        StatusCode::CREATED
    );
}

/// The longest detail a problem had in these tests: client input is shown
/// by its first characters only.
const LONGEST_DETAIL: usize = 400;

#[tokio::test]
async fn a_problem_never_echoes_more_than_a_prefix_of_what_was_sent() {
    let server = TestServer::start(&["--max-key-bytes", "8192"]).await;
    let long = "x".repeat(7000);
    let json = |path: &str, body: String| {
        server
            .request(Method::POST, path)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases = vec![
        (
            "Last-Event-ID",
            server
                .request(Method::GET, "/watch_key/k")
                .header("last-event-id", long.as_str()),
        ),
        (
            "ttl",
            server.request(Method::PUT, &format!("/store/k?ttl={long}")),
        ),
        (
            "since",
            server.request(Method::GET, &format!("/watch_key/k?since={long}")),
        ),
        (
            "limit",
            server.request(Method::GET, &format!("/store?limit={long}")),
        ),
        (
            "missing key",
            server.request(Method::GET, &format!("/store/{long}")),
        ),
        (
            "If-Match",
            server
                .request(Method::DELETE, &format!("/store/{long}"))
                .header("if-match", "\"1\""),
        ),
        (
            "CAS on a missing key",
            json(
                &format!("/store/cas/{long}"),
                r#"{"expected":"a","new":"b"}"#.to_owned(),
            ),
        ),
        (
            "JSON of the wrong type",
            json(
                "/store/cas/k",
                format!(r#"{{"expected":"a","new":"b","ttl":"{long}"}}"#),
            ),
        ),
        (
            "batch key twice",
            json(
                "/batch",
                format!(r#"[{{"method":"GET","key":"{long}"}},{{"method":"GET","key":"{long}"}}]"#),
            ),
        ),
        (
            "Content-Type",
            server
                .request(Method::POST, "/batch")
                .header("content-type", format!("text/{long}"))
                .body("[]"),
        ),
    ];
    for (what, request) in cases {
        let response = request.send().await.expect("request");
        let status = response.status();
        assert!(status.is_client_error(), "{what}: {status}");
        let body = problem(response, status).await;
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.chars().count() <= LONGEST_DETAIL && !detail.contains(&"x".repeat(100)),
            "{what}: {detail}"
        );
        assert!(detail.contains("xxxx"), "{what}: shows the start: {detail}");
    }
}

#[tokio::test]
async fn a_missing_parameter_names_the_operation_that_needs_it() {
    let server = TestServer::start(&[]).await;
    let watch = problem(server.get("/watch").await, StatusCode::BAD_REQUEST).await;
    let detail = watch["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("GET /watch needs `prefix`") && !detail.contains("delet"),
        "{detail}"
    );
    let delete = server
        .request(Method::DELETE, "/store")
        .send()
        .await
        .expect("DELETE");
    let body = problem(delete, StatusCode::BAD_REQUEST).await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("DELETE /store needs `prefix`"),
        "{detail}"
    );
    let empty = server
        .request(Method::DELETE, "/store?prefix=")
        .send()
        .await
        .expect("DELETE");
    let body = problem(empty, StatusCode::BAD_REQUEST).await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("the prefix is empty"), "{detail}");
    // An empty prefix is a watch of every key.
    let mut all = common::Sse::new(server.get("/watch?prefix=").await);
    assert_eq!(all.snapshot().await.0, Vec::new());
}

/// What a newcomer's usual slips are told: each answer says what to send.
#[tokio::test]
async fn a_common_slip_is_told_what_to_send() {
    let server = TestServer::start(&[]).await;
    let tag = common::etag(&server.put("k", "v").await).expect("an ETag");
    let unquoted = tag.trim_matches('"').to_owned();
    let detail = |header: &str| {
        format!(
            "{header}: entity tag {unquoted} is not in quotes; send \"{unquoted}\" (an ETag is a \
             revision in double quotes, as the ETag header gives it)"
        )
    };
    for (method, header) in [
        (Method::GET, "If-Match"),
        (Method::GET, "If-None-Match"),
        (Method::PUT, "If-Match"),
        (Method::PUT, "If-None-Match"),
        (Method::DELETE, "If-Match"),
    ] {
        let response = server
            .request(method.clone(), "/store/k")
            .header(header, unquoted.as_str())
            .body("w")
            .send()
            .await
            .expect("request");
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["detail"], detail(header), "{method} {header}");
    }
    assert_eq!(
        server.get("/store/k").await.text().await.expect("body"),
        "v"
    );
    let not_ascii = server
        .request(Method::GET, "/store/k")
        .header(
            "If-None-Match",
            reqwest::header::HeaderValue::from_bytes(b"\xc2\x84").expect("a header value"),
        )
        .send()
        .await
        .expect("GET");
    let body = problem(not_ascii, StatusCode::BAD_REQUEST).await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .starts_with("If-None-Match: not a list of entity tags"),
        "{body}"
    );

    let cas = server
        .request(Method::POST, "/store/cas/k")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("CAS");
    let body = problem(cas, StatusCode::BAD_REQUEST).await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("the body is empty: this operation takes a JSON document"),
        "{body}"
    );
    let listing = problem(
        server.get("/store?prefix=&keys_only=1").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        listing["detail"],
        "keys_only 1 is not a boolean: send true or false"
    );
    for (path, key, encoded) in [
        ("/store/a/b", "a/b", "a%2Fb"),
        ("/store/cas/a/b", "a/b", "a%2Fb"),
        ("/watch_key/x/y/z", "x/y/z", "x%2Fy%2Fz"),
    ] {
        let body = problem(server.get(path).await, StatusCode::NOT_FOUND).await;
        assert_eq!(
            body["detail"],
            format!(
                "no such endpoint: a key is one path segment, so send the `/` inside key \
                 {key:?} as %2F ({encoded})"
            ),
            "{path}"
        );
    }
}
