//! Errors of every kind are problem+json; rate limiting.

mod common;

use common::{TestServer, problem};
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
