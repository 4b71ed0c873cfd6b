//! Concurrent clients against one key.

use crate::common::{TestServer, problem};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cas_increments_end_at_the_number_of_successes() {
    let server = TestServer::start(&[]).await;
    server.put("counter", "0").await;

    const TASKS: usize = 16;
    const ATTEMPTS: usize = 40;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let client = server.client.clone();
        let (get, cas) = (
            server.url("/store/counter"),
            server.url("/store/cas/counter"),
        );
        tasks.push(tokio::spawn(async move {
            let mut successes = 0u64;
            for _ in 0..ATTEMPTS {
                let current = client
                    .get(&get)
                    .send()
                    .await
                    .expect("GET")
                    .text()
                    .await
                    .expect("body");
                let next = current.parse::<u64>().expect("a number") + 1;
                let response = client
                    .post(&cas)
                    .header("content-type", "application/json")
                    .body(json!({"expected": current, "new": next.to_string()}).to_string())
                    .send()
                    .await
                    .expect("CAS");
                match response.status() {
                    StatusCode::NO_CONTENT => successes += 1,
                    StatusCode::PRECONDITION_FAILED => {}
                    other => panic!("unexpected CAS status {other}"),
                }
            }
            successes
        }));
    }
    let mut successes = 0;
    for task in tasks {
        successes += task.await.expect("task");
    }
    let final_value = server
        .get("/store/counter")
        .await
        .text()
        .await
        .expect("body");
    assert_eq!(final_value, successes.to_string());
    assert!(successes > 0);
    let status = server.status().await;
    assert_eq!(status["successful_cas_operations"], successes);
    assert_eq!(
        status["failed_cas_operations"],
        (TASKS * ATTEMPTS) as u64 - successes
    );
    problem(server.get("/store/nothing").await, StatusCode::NOT_FOUND).await;
}
