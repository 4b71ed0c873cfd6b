//! Locks and elections on `--backend etcd` beside etcd's own tools: a lock
//! taken with `etcdctl lock` excludes a kv-store lock of the same name and
//! the other way round, `etcdctl elect` campaigns in the same election, a
//! lock outlives the kv-store node that granted it, and an election keeps
//! one leader across nodes.
//!
//! Built with `--features etcd` only; needs `etcd` and `etcdctl` (Debian's
//! `etcd-server` and `etcd-client`) and fails loudly without them.

// A binary of its own (it starts etcd clusters): it uses a part of the
// helpers.
#[allow(dead_code)]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

use common::etcd::Cluster;
use common::process::{ServerProcess, on_etcd};
use common::{Sse, SseEvent, TestServer, json, problem};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value as Json, json};

/// `etcdctl` on the cluster, its stdout piped.
fn etcdctl(cluster: &Cluster, args: &[&str]) -> Child {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cluster.endpoints()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("etcdctl runs (Debian's etcd-client)")
}

/// The next line `etcdctl` prints.
fn line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("etcdctl prints a line");
    line.trim().to_owned()
}

/// Stops `etcdctl` as Ctrl-C does: it ends its session, which revokes its
/// lease and so takes its key out of the line.
fn interrupt(child: &mut Child) {
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(sent.is_ok_and(|status| status.success()), "kill -INT");
    child.wait().expect("etcdctl exits");
}

/// The next contender to join a line that `watch` follows: its key.
async fn joined(watch: &mut Sse) -> String {
    loop {
        let event = watch.next().await.expect("the watch goes on");
        if event.event == "put" {
            return event.key().to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_lock_and_a_kv_store_lock_exclude_each_other() {
    let cluster = Cluster::start(1);
    let node = TestServer::start_on_etcd(&cluster.endpoints(), &[]).await;
    let mut line_of = Sse::new(node.get("/watch?prefix=jobs/").await);
    line_of.snapshot().await;

    // etcdctl holds it: kv-store's try-lock is refused, and its read shows
    // etcdctl's key and token, which fences a kv-store write.
    let mut held = etcdctl(&cluster, &["lock", "kv-store/jobs"]);
    let mut out = BufReader::new(held.stdout.take().expect("stdout"));
    let key = line(&mut out);
    let key = key.strip_prefix("kv-store/").expect("under --etcd-prefix");
    assert_eq!(joined(&mut line_of).await, key);
    let refused = node
        .post_json("/locks/jobs", &json!({"ttl": 30, "wait": 0}))
        .await;
    problem(refused, StatusCode::LOCKED).await;
    let state = json(node.get("/locks/jobs").await).await;
    assert_eq!(state["holder"]["key"], key, "{state}");
    let token = state["holder"]["token"].as_u64().expect("a token");
    let fenced = node
        .request(Method::PUT, "/store/report")
        .header("If-Fence", format!("jobs={token}"))
        .body("by etcdctl's holder")
        .send()
        .await
        .expect("PUT");
    assert_eq!(fenced.status(), StatusCode::CREATED);

    // Ctrl-C: its session ends, and kv-store gets the lock.
    interrupt(&mut held);
    let ours = node.post_json("/locks/jobs", &json!({"ttl": 30})).await;
    assert_eq!(ours.status(), StatusCode::OK);
    let ours = json(ours).await;
    assert!(ours["token"].as_u64() > Some(token), "{ours}");

    // kv-store holds it: etcdctl waits in line until it is released.
    joined(&mut line_of).await; // our own key
    let waiting = etcdctl(
        &cluster,
        &["lock", "kv-store/jobs", "echo", "etcdctl holds it"],
    );
    joined(&mut line_of).await;
    let mut waiting = waiting;
    assert!(
        waiting.try_wait().expect("etcdctl").is_none(),
        "etcdctl waits while kv-store holds the lock"
    );
    let released = node
        .request(
            Method::DELETE,
            &format!("/locks/jobs?token={}", ours["token"]),
        )
        .send()
        .await
        .expect("DELETE");
    assert_eq!(released.status(), StatusCode::NO_CONTENT);
    let output = waiting
        .wait_with_output()
        .expect("etcdctl runs its command");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "etcdctl holds it\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_elect_campaigns_in_the_same_election() {
    let cluster = Cluster::start(1);
    let node = TestServer::start_on_etcd(&cluster.endpoints(), &[]).await;
    let mut line_of = Sse::new(node.get("/watch?prefix=web/").await);
    line_of.snapshot().await;
    let elected = node
        .post_json("/elections/web", &json!({"value": "kv-store", "ttl": 30}))
        .await;
    assert_eq!(elected.status(), StatusCode::OK);
    let elected = json(elected).await;
    joined(&mut line_of).await;
    let mut observer = Sse::new(node.get("/elections/web/observe").await);
    let first = observer.next().await.expect("the leader now");
    assert_eq!(first.data["leader"]["value"], "kv-store");

    // etcdctl campaigns behind us; our resignation elects it.
    let mut campaign = etcdctl(&cluster, &["elect", "kv-store/web", "etcdctl"]);
    let mut out = BufReader::new(campaign.stdout.take().expect("stdout"));
    let its_key = joined(&mut line_of).await;
    let resigned = node
        .request(
            Method::DELETE,
            &format!("/elections/web?term={}", elected["term"]),
        )
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resigned.status(), StatusCode::NO_CONTENT);
    assert_eq!(line(&mut out), format!("kv-store/{its_key}"));
    assert_eq!(line(&mut out), "etcdctl");
    let next: SseEvent = observer.next().await.expect("a new leader");
    assert_eq!(next.data["leader"]["key"], its_key.as_str());
    assert_eq!(next.data["leader"]["value"], "etcdctl");
    let now = json(node.get("/elections/web").await).await;
    assert_eq!(now["leader"]["value"], "etcdctl", "{now}");
    assert!(now["leader"]["term"].as_u64() > elected["term"].as_u64());
    interrupt(&mut campaign);
    let gone = observer.next().await.expect("nobody leads");
    assert!(gone.data.get("leader").is_none(), "{}", gone.data);
}

/// A lock is the cluster's, not a node's: taken through node A, which is
/// then killed (-9), it is still held, fences writes, is kept alive and
/// released through node B, and the next in line gets it.
#[tokio::test(flavor = "multi_thread")]
async fn a_lock_outlives_the_node_that_granted_it() {
    let cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    let a = ServerProcess::spawn(on_etcd(&endpoints, &[]));
    let b = TestServer::start_on_etcd(&endpoints, &[]).await;
    let client = Client::new();
    let held = client
        .post(format!("{}/locks/jobs", a.url))
        .json(&json!({"ttl": 30}))
        .send()
        .await
        .expect("POST");
    assert_eq!(held.status(), StatusCode::OK);
    let held: Json = json(held).await;
    a.kill();

    let state = json(b.get("/locks/jobs").await).await;
    assert_eq!(state["holder"]["token"], held["token"], "{state}");
    let lease = held["lease"].as_str().expect("a lease");
    let kept = b
        .request(Method::POST, &format!("/leases/{lease}/keepalive"))
        .send()
        .await
        .expect("keepalive");
    assert_eq!(kept.status(), StatusCode::OK);
    let fenced = b
        .request(Method::PUT, "/store/report")
        .header("If-Fence", format!("jobs={}", held["token"]))
        .body("still the holder")
        .send()
        .await
        .expect("PUT");
    assert_eq!(fenced.status(), StatusCode::CREATED);
    let waiter = {
        let request = b
            .request(Method::POST, "/locks/jobs")
            .json(&json!({"ttl": 30}));
        tokio::spawn(async move { request.send().await.expect("POST") })
    };
    let released = b
        .request(
            Method::DELETE,
            &format!("/locks/jobs?token={}", held["token"]),
        )
        .send()
        .await
        .expect("DELETE");
    assert_eq!(released.status(), StatusCode::NO_CONTENT);
    let next = json(waiter.await.expect("the waiter")).await;
    assert!(next["token"].as_u64() > held["token"].as_u64(), "{next}");
}

/// Five campaigners on two nodes: one leader at a time (each, elected,
/// writes fenced on its term and resigns); an observer on one node sees
/// every leader in term order, and one resumed on the other node after
/// any event sees the rest, none twice.
#[tokio::test(flavor = "multi_thread")]
async fn one_leader_at_a_time_across_two_nodes() {
    const CAMPAIGNERS: usize = 5;
    let cluster = Cluster::start(3);
    let endpoints = cluster.endpoints();
    let nodes = [
        TestServer::start_on_etcd(&endpoints, &[]).await,
        TestServer::start_on_etcd(&endpoints, &[]).await,
    ];
    let mut observer = Sse::new(nodes[1].get("/elections/web/observe").await);
    let first = observer.next().await.expect("the leader now");
    assert!(first.data.get("leader").is_none(), "nobody leads yet");

    let mut campaigners = Vec::new();
    for n in 0..CAMPAIGNERS {
        let node = &nodes[n % 2];
        let (client, base) = (node.client.clone(), node.url(""));
        campaigners.push(tokio::spawn(async move {
            let elected: Json = json(
                client
                    .post(format!("{base}/elections/web"))
                    .json(&json!({"value": format!("c{n}"), "ttl": 60}))
                    .send()
                    .await
                    .expect("campaign"),
            )
            .await;
            let term = elected["term"].as_u64().expect("a term");
            let fenced = client
                .put(format!("{base}/store/leader"))
                .header("If-Fence", format!("web={term}"))
                .body(format!("c{n}"))
                .send()
                .await
                .expect("PUT");
            assert!(fenced.status().is_success());
            let resigned = client
                .delete(format!("{base}/elections/web?term={term}"))
                .send()
                .await
                .expect("resign");
            assert_eq!(resigned.status(), StatusCode::NO_CONTENT);
            (term, format!("c{n}"))
        }));
    }
    let mut terms = Vec::new();
    for campaigner in campaigners {
        terms.push(campaigner.await.expect("a campaigner"));
    }
    terms.sort_unstable();

    let events = observer.take(CAMPAIGNERS + 1).await;
    let seen: Vec<Option<(u64, String)>> = events
        .iter()
        .map(|event| {
            let leader = &event.data["leader"];
            leader["term"]
                .as_u64()
                .map(|term| (term, leader["value"].as_str().unwrap_or("").to_owned()))
        })
        .collect();
    let mut expected: Vec<Option<(u64, String)>> = terms.into_iter().map(Some).collect();
    expected.push(None);
    assert_eq!(seen, expected, "every leader in term order, then nobody");

    for cut in [0, 2] {
        let mut resumed = Sse::new(
            nodes[0]
                .request(Method::GET, "/elections/web/observe")
                .header("Last-Event-ID", events[cut].id.expect("an id").to_string())
                .send()
                .await
                .expect("observe"),
        );
        let again = resumed.take(events.len() - cut - 1).await;
        assert_eq!(
            again,
            events[cut + 1..],
            "resumed on the other node after {cut}"
        );
    }
}
