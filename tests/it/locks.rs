//! Locks and fenced writes over HTTP, on both backends: the line served in
//! arrival order, waits that run out or are abandoned leave nothing behind,
//! a lost lease releases, and every kind of write refuses a stale token.

use crate::common::{Sse, TestServer, etcd, json, on_test_clock, problem};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value as Json, json};

async fn acquire(server: &TestServer, name: &str, body: Json) -> Response {
    server.post_json(&format!("/locks/{name}"), &body).await
}

async fn held(server: &TestServer, name: &str, body: Json) -> Json {
    let response = acquire(server, name, body).await;
    assert_eq!(response.status(), StatusCode::OK, "acquired");
    json(response).await
}

fn token(held: &Json) -> u64 {
    held["token"].as_u64().expect("a token")
}

/// Waits for the next contender to join the line `watch` follows (a put
/// of a key under the lock's prefix); answers its key.
async fn joined(watch: &mut Sse) -> String {
    loop {
        let event = watch.next().await.expect("the watch goes on");
        if event.event == "put" {
            return event.key().to_owned();
        }
    }
}

/// Waits for a contender's key to leave the line.
async fn left(watch: &mut Sse, key: &str) {
    loop {
        let event = watch.next().await.expect("the watch goes on");
        if event.key() == key && matches!(event.event.as_str(), "delete" | "expire") {
            return;
        }
    }
}

/// A write fenced on `fence`.
async fn fenced_put(server: &TestServer, key: &str, value: &str, fence: &str) -> Response {
    server
        .request(Method::PUT, &format!("/store/{key}"))
        .header("If-Fence", fence)
        .body(value.to_owned())
        .send()
        .await
        .expect("PUT")
}

/// Releases lock `name` held with `token`.
async fn release(server: &TestServer, name: &str, token: u64) -> Response {
    server
        .request(Method::DELETE, &format!("/locks/{name}?token={token}"))
        .send()
        .await
        .expect("DELETE")
}

async fn lock_state(server: &TestServer, name: &str) -> Json {
    let response = server.get(&format!("/locks/{name}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

#[test]
fn waiters_are_served_in_arrival_order_and_the_token_fences_writes() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        let mut line = Sse::new(server.get("/watch?prefix=jobs/").await);
        line.snapshot().await;
        let first = held(&server, "jobs", json!({"ttl": 30})).await;
        assert_eq!(
            joined(&mut line).await,
            first["key"].as_str().expect("a key")
        );
        assert_eq!(
            first["key"],
            format!(
                "jobs/{}",
                first["lease"]
                    .as_str()
                    .expect("a lease")
                    .trim_start_matches('0')
            )
        );

        // Two waiters, the second joining once the first is in line.
        let waiter = |server: &TestServer| {
            let request = server
                .request(Method::POST, "/locks/jobs")
                .header("content-type", "application/json")
                .body(json!({"ttl": 30}).to_string());
            tokio::spawn(async move { request.send().await.expect("POST") })
        };
        let second = waiter(&server);
        joined(&mut line).await;
        let third = waiter(&server);
        joined(&mut line).await;
        let state = lock_state(&server, "jobs").await;
        assert_eq!(state["waiters"], 2, "{state}");
        assert_eq!(state["holder"]["token"], token(&first), "{state}");

        // The holder's token fences a write; any other is refused, and
        // nothing is written.
        let fence = format!("jobs={}", token(&first));
        let put = fenced_put(&server, "counter", "1", &fence).await;
        assert_eq!(put.status(), StatusCode::CREATED);
        let stale = format!("jobs={}", token(&first) + 1);
        let refused = problem(
            fenced_put(&server, "counter", "2", &stale).await,
            StatusCode::PRECONDITION_FAILED,
        )
        .await;
        assert_eq!(refused["type"], "urn:kv-store:problem:fence-lost");
        let value = server
            .get("/store/counter")
            .await
            .text()
            .await
            .expect("text");
        assert_eq!(value, "1");

        // Released: the first waiter holds it, with a larger token; the
        // second still waits; the old token fences nothing any more.
        let released = release(&server, "jobs", token(&first)).await;
        assert_eq!(released.status(), StatusCode::NO_CONTENT);
        let second = json(second.await.expect("the waiter")).await;
        assert!(token(&second) > token(&first), "{second}");
        assert!(!third.is_finished(), "the second waiter still waits");
        problem(
            fenced_put(&server, "counter", "3", &fence).await,
            StatusCode::PRECONDITION_FAILED,
        )
        .await;
        let again = release(&server, "jobs", token(&first)).await;
        problem(again, StatusCode::PRECONDITION_FAILED).await;

        release(&server, "jobs", token(&second)).await;
        let third = json(third.await.expect("the waiter")).await;
        assert!(token(&third) > token(&second), "{third}");
        let state = lock_state(&server, "jobs").await;
        assert_eq!(
            (state["waiters"].as_u64(), state["holder"]["token"].as_u64()),
            (Some(0), Some(token(&third)))
        );
    });
}

#[test]
fn a_wait_that_runs_out_answers_423_and_leaves_the_line() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        let first = held(&server, "jobs", json!({"ttl": 30})).await;
        let mut line = Sse::new(server.get("/watch?prefix=jobs/").await);
        line.snapshot().await;
        let timed_out = acquire(&server, "jobs", json!({"ttl": 30, "wait": 1})).await;
        assert_eq!(
            timed_out.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
        let body = problem(timed_out, StatusCode::LOCKED).await;
        assert_eq!(body["type"], "urn:kv-store:problem:wait-timed-out");
        // It joined, then left before answering.
        let key = joined(&mut line).await;
        left(&mut line, &key).await;
        let state = lock_state(&server, "jobs").await;
        assert_eq!(state["waiters"], 0, "{state}");
        assert_eq!(state["holder"]["token"], token(&first));
        // wait 0: a try-lock, refused while held, granted when free.
        let tried = acquire(&server, "jobs", json!({"ttl": 30, "wait": 0})).await;
        problem(tried, StatusCode::LOCKED).await;
        let free = acquire(&server, "free", json!({"ttl": 30, "wait": 0})).await;
        assert_eq!(
            free.status(),
            StatusCode::OK,
            "a free lock is taken at once"
        );
    });
}

#[test]
fn a_waiter_whose_client_goes_away_leaves_the_line() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        let first = held(&server, "jobs", json!({"ttl": 30})).await;
        let mut line = Sse::new(server.get("/watch?prefix=jobs/").await);
        line.snapshot().await;
        let request = server
            .request(Method::POST, "/locks/jobs")
            .header("content-type", "application/json")
            .body(json!({"ttl": 30}).to_string());
        let waiting = tokio::spawn(async move { request.send().await });
        let key = joined(&mut line).await;
        waiting.abort();
        left(&mut line, &key).await;
        let state = lock_state(&server, "jobs").await;
        assert_eq!(state["waiters"], 0, "{state}");
        assert_eq!(state["holder"]["token"], token(&first));
    });
}

#[test]
fn losing_the_lease_releases_the_lock() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        // Revoked.
        let lease = json(server.post_json("/leases", &json!({"ttl": 30})).await).await;
        let lease = lease["id"].as_str().expect("an id").to_owned();
        let first = held(&server, "jobs", json!({"lease": lease})).await;
        assert_eq!(first["lease"], lease.as_str());
        // The same lease again: the same place in line (etcd's Mutex on one
        // session), not a second one.
        let again = held(&server, "jobs", json!({"lease": lease})).await;
        assert_eq!(token(&again), token(&first));
        let request = server
            .request(Method::POST, "/locks/jobs")
            .header("content-type", "application/json")
            .body(json!({"ttl": 30}).to_string());
        let waiting = tokio::spawn(async move { request.send().await.expect("POST") });
        let revoked = server
            .request(Method::DELETE, &format!("/leases/{lease}"))
            .send()
            .await
            .expect("DELETE");
        assert_eq!(revoked.status(), StatusCode::OK);
        let second = json(waiting.await.expect("the waiter")).await;
        assert!(token(&second) > token(&first));
        problem(
            fenced_put(&server, "k", "v", &format!("jobs={}", token(&first))).await,
            StatusCode::PRECONDITION_FAILED,
        )
        .await;

        // Run out: a lease nobody keeps alive ends, and the lock with it.
        let short = held(&server, "short", json!({"ttl": 2})).await;
        let request = server
            .request(Method::POST, "/locks/short")
            .header("content-type", "application/json")
            .body(json!({"ttl": 30}).to_string());
        let waiting = tokio::spawn(async move { request.send().await.expect("POST") });
        let next = json(waiting.await.expect("the waiter")).await;
        assert!(token(&next) > token(&short));

        // A lease that does not exist: 404, nothing queued.
        let missing = acquire(&server, "jobs", json!({"lease": "7"})).await;
        problem(missing, StatusCode::NOT_FOUND).await;
        let state = lock_state(&server, "jobs").await;
        assert_eq!(state["waiters"], 0, "{state}");
    });
}

#[test]
fn every_kind_of_write_takes_a_fence() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        server.put("a", "0").await;
        let lock = held(&server, "jobs", json!({"ttl": 30})).await;
        let good = format!("jobs={}", token(&lock));
        let bad = format!("jobs={}", token(&lock) + 100);
        let requests = |fence: &str| {
            let with = |method: Method, path: &str| {
                server
                    .request(method, path)
                    .header("If-Fence", fence.to_owned())
            };
            vec![
                ("put", with(Method::PUT, "/store/a").body("1")),
                (
                    "cas",
                    with(Method::POST, "/store/cas/a")
                        .header("content-type", "application/json")
                        .body(json!({"expected": "1", "new": "2"}).to_string()),
                ),
                (
                    "batch",
                    with(Method::POST, "/batch")
                        .header("content-type", "application/json")
                        .body(json!([{"method": "PUT", "key": "b", "value": "1"}]).to_string()),
                ),
                (
                    "txn",
                    with(Method::POST, "/txn")
                        .header("content-type", "application/json")
                        .body(
                            json!({"guards": [{"key": "zz", "compare": "EXISTS"}],
                                   "else": [{"op": "PUT", "key": "c", "value": "1"}]})
                            .to_string(),
                        ),
                ),
                ("delete", with(Method::DELETE, "/store/b")),
                ("delete prefix", with(Method::DELETE, "/store?prefix=c")),
            ]
        };
        let before = server.status().await["revision"].clone();
        for (what, request) in requests(&bad) {
            let body = problem(
                request.send().await.expect("a write"),
                StatusCode::PRECONDITION_FAILED,
            )
            .await;
            assert_eq!(body["type"], "urn:kv-store:problem:fence-lost", "{what}");
        }
        assert_eq!(server.status().await["revision"], before, "nothing written");
        for (what, request) in requests(&good) {
            let status = request.send().await.expect("a write").status();
            assert!(status.is_success(), "{what}: {status}");
        }
        let listed = json(server.get("/store?prefix=").await).await;
        let keys: Vec<&str> = listed["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|item| item["key"].as_str())
            .filter(|key| !key.starts_with("jobs/"))
            .collect();
        assert_eq!(keys, ["a"], "{listed}");

        // A fence that is no fence, or names no lock held.
        for header in ["jobs", "jobs=0", "=3", "jobs=x"] {
            let response = fenced_put(&server, "a", "9", header).await;
            let body = problem(response, StatusCode::BAD_REQUEST).await;
            assert!(
                body["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("NAME=TOKEN")),
                "{body}"
            );
        }
        problem(
            fenced_put(&server, "a", "9", "nolock=1").await,
            StatusCode::PRECONDITION_FAILED,
        )
        .await;
    });
}

/// On real time: with a data dir a grant waits for the flusher thread, and
/// a paused clock would jump past the new lease's TTL meanwhile.
#[tokio::test]
async fn a_lock_and_its_token_survive_a_restart() {
    if etcd::wanted() {
        return; // A data dir is the memory store's; etcd keeps its own.
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_str().expect("a UTF-8 path").to_owned();
    let flags = ["--data-dir", &data_dir];
    let server = TestServer::start_memory(&flags).await;
    let lock = held(&server, "jobs", json!({"ttl": 600})).await;
    server.stop().await;

    let server = TestServer::start_memory(&flags).await;
    let state = lock_state(&server, "jobs").await;
    assert_eq!(state["holder"]["token"], token(&lock), "{state}");
    let fence = format!("jobs={}", token(&lock));
    let put = fenced_put(&server, "k", "v", &fence).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let timed_out = acquire(&server, "jobs", json!({"ttl": 30, "wait": 1})).await;
    problem(timed_out, StatusCode::LOCKED).await;
}

#[test]
fn bad_lock_requests_get_problems() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        for body in [
            json!({}),
            json!({"ttl": 5, "lease": "1"}),
            json!({"ttl": 0}),
        ] {
            let response = acquire(&server, "jobs", body.clone()).await;
            problem(response, StatusCode::BAD_REQUEST).await;
        }
        let released = server
            .request(Method::DELETE, "/locks/jobs?token=5")
            .send()
            .await
            .expect("DELETE");
        let body = problem(released, StatusCode::PRECONDITION_FAILED).await;
        assert_eq!(body["type"], "urn:kv-store:problem:fence-lost");
        let state = lock_state(&server, "free").await;
        assert_eq!(state["waiters"], 0);
        assert!(state.get("holder").is_none(), "{state}");
        // Its contenders' keys must fit --max-key-bytes (1024): the name,
        // `/` and 16 hex digits.
        let long = "n".repeat(1008);
        let refused = acquire(&server, &long, json!({"ttl": 5})).await;
        let body = problem(refused, StatusCode::BAD_REQUEST).await;
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains("1007")),
            "{body}"
        );
    });
}

/// One client of the mutual-exclusion check, a separate process so that it
/// can be stopped: `rounds` times, it takes the lock (on a lease of `ttl`
/// seconds it never keeps alive), reads the counter, writes counter + 1
/// fenced on its token (the value says which token wrote it), and
/// releases. With `victim` set it waits for a line on stdin once it first
/// holds the lock: the harness stops it there.
const CLIENT: &str = r#"
url=$1 rounds=$2 victim=$3 ttl=$4
for ((i = 0; i < rounds; i++)); do
  held=$(curl -s -X POST "$url/locks/counter" -H 'content-type: application/json' \
    -d "{\"ttl\":$ttl}")
  case $held in *'"token"'*) ;; *) echo "failed to acquire: $held"; exit 1;; esac
  token=$(grep -o '"token":[0-9]*' <<<"$held" | cut -d: -f2)
  key=$(grep -o '"key":"[^"]*"' <<<"$held" | cut -d'"' -f4)
  echo "held $token $key"
  if [ "$victim" = 1 ] && [ "$i" = 0 ]; then read -r _; fi
  n=$(curl -sf "$url/store/counter" | cut -d' ' -f1)
  status=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$url/store/counter" \
    -H "If-Fence: counter=$token" -d "$((${n:-0} + 1)) $token")
  echo "wrote $status $token"
  curl -s -o /dev/null -X DELETE "$url/locks/counter?token=$token"
done
echo done
"#;

/// Kleppmann's scenario, checked: eight clients take turns on a counter
/// under a lock; one is stopped (SIGSTOP) while it holds the lock, until
/// its lease has run out and another holds it, then resumed. Its fenced
/// write is refused; every other critical section's write lands, in
/// turn: the counter counts the writes that landed, and in commit order
/// each write's value is one more than the last, by a larger token.
#[tokio::test(flavor = "multi_thread")]
async fn a_holder_stopped_past_its_lease_cannot_write() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    const CLIENTS: usize = 8;
    const ROUNDS: usize = 12;
    let server = TestServer::start(&[]).await;
    let mut commits = Sse::new(server.get("/watch_key/counter").await);
    commits.snapshot().await;
    let mut line = Sse::new(server.get("/watch?prefix=counter/").await);
    line.snapshot().await;

    let url = server.url("");
    let spawn = |victim: bool| {
        Command::new("bash")
            .args(["-c", CLIENT, "client", &url, &ROUNDS.to_string()])
            // The victim's lease runs out while it is stopped; the
            // others' outlast their wait in line behind it.
            .args(if victim { ["1", "2"] } else { ["0", "30"] })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("bash runs a client")
    };
    let mut victim = spawn(true);
    let mut victim_out = BufReader::new(victim.stdout.take().expect("stdout"));
    let mut first = String::new();
    victim_out
        .read_line(&mut first)
        .expect("the victim's first line");
    let mut held = first.split_whitespace().skip(1);
    let (token, key) = (
        held.next().expect("a token").to_owned(),
        held.next().expect("a key").to_owned(),
    );
    // Stopped while it holds the lock; the others start behind it.
    let pid = victim.id().to_string();
    let signal = |name: &str| {
        let sent = Command::new("kill").args([name, &pid]).status();
        assert!(sent.is_ok_and(|status| status.success()), "kill {name}");
    };
    signal("-STOP");
    let others: Vec<_> = (1..CLIENTS).map(|_| spawn(false)).collect();
    // Its lease runs out while it is stopped: its key leaves the line.
    left(&mut line, &key).await;
    let state = lock_state(&server, "counter").await;
    assert_ne!(state["holder"]["token"].to_string(), token, "{state}");
    victim
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("the victim reads on");
    signal("-CONT");

    let mut victim_lines = vec![first.trim().to_owned()];
    victim_lines.extend(victim_out.lines().map(|line| line.expect("a line")));
    assert!(victim.wait().expect("the victim exits").success());
    assert_eq!(
        victim_lines[1],
        format!("wrote 412 {token}"),
        "the stopped holder's write is refused: {victim_lines:?}"
    );
    let mut landed = victim_lines
        .iter()
        .filter(|l| l.starts_with("wrote 20"))
        .count();
    for other in others {
        let output = other.wait_with_output().expect("a client exits");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(output.status.success(), "{text}");
        assert!(text.ends_with("done\n"), "{text}");
        landed += text.lines().filter(|l| l.starts_with("wrote 20")).count();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("wrote 412")).count(),
            0,
            "no other holder lost its lock: {text}"
        );
    }
    assert_eq!(landed, CLIENTS * ROUNDS - 1);
    // In commit order: 1, 2, 3, ... each by a larger token than the last.
    let writes = commits.take(landed).await;
    let mut last_token = 0;
    for (n, write) in writes.iter().enumerate() {
        let value = write.value().expect("a value");
        let (count, by) = value.split_once(' ').expect("count and token");
        assert_eq!(count, (n + 1).to_string(), "write {n}: {value}");
        let by: u64 = by.parse().expect("a token");
        assert!(by > last_token, "write {n}: token {by} after {last_token}");
        last_token = by;
    }
    let value = server
        .get("/store/counter")
        .await
        .text()
        .await
        .expect("text");
    assert_eq!(value.split(' ').next(), Some(landed.to_string().as_str()));
}
