//! `/metrics`: Prometheus text with requests by operation and status and
//! the store's state.

use crate::common::TestServer;
use reqwest::StatusCode;

async fn scrape(server: &TestServer) -> String {
    let response = server.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("application/openmetrics-text")
    );
    response.text().await.expect("body")
}

#[tokio::test]
async fn metrics_count_requests_and_show_the_store() {
    let server = TestServer::start(&[]).await;
    server.put("a", "1").await;
    server.put("a", "2").await;
    server.get("/store/a").await;
    server.get("/store/missing").await;
    server.get("/no/such/route").await;

    let text = scrape(&server).await;
    for line in [
        "kv_http_request_duration_seconds_count{operation=\"put_key\",status=\"201\"} 1",
        "kv_http_request_duration_seconds_count{operation=\"put_key\",status=\"204\"} 1",
        "kv_http_request_duration_seconds_count{operation=\"get_key\",status=\"200\"} 1",
        "kv_http_request_duration_seconds_count{operation=\"get_key\",status=\"404\"} 1",
        "kv_http_request_duration_seconds_count{operation=\"other\",status=\"404\"} 1",
        "kv_keys 1",
        "kv_revision 2",
        "kv_watch_streams 0",
        "kv_expired_keys_total 0",
        "kv_dropped_watchers_total 0",
        "kv_disk_commits_total 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

#[tokio::test]
async fn metrics_count_commits_to_the_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_str().expect("UTF-8 path");
    let server = TestServer::start(&["--data-dir", data_dir]).await;
    for value in ["1", "2", "3"] {
        server.put("a", value).await;
    }
    let text = scrape(&server).await;
    // Sequential writes: each is its own group.
    for line in [
        "kv_disk_commits_total 3",
        "kv_disk_committed_writes_total 3",
        "kv_disk_errors_total 0",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(text.contains("kv_disk_commit_seconds_total "), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn metrics_are_not_rate_limited() {
    let server = TestServer::start(&["--rate-limit", "1", "--rate-burst", "1"]).await;
    for _ in 0..10 {
        scrape(&server).await;
    }
}
