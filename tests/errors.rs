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
