//! Leader election over HTTP, on both backends: one leader at a time, its
//! term fencing writes, and observers that see every change in order and
//! resume without losing one.

use crate::common::{Sse, SseEvent, TestServer, json, on_test_clock, problem};
use reqwest::{Method, StatusCode};
use serde_json::json;

const CAMPAIGNERS: usize = 5;

async fn observe(server: &TestServer, last_event_id: Option<u64>) -> Sse {
    let mut request = server.request(Method::GET, "/elections/web/observe");
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    Sse::new(request.send().await.expect("observe"))
}

/// The leader an event names: its term and value (`None`: nobody leads).
fn leader(event: &SseEvent) -> Option<(u64, String)> {
    assert_eq!(event.event, "leader");
    assert_eq!(
        event.id,
        event.data["revision"].as_u64(),
        "id is the revision"
    );
    let leader = &event.data["leader"];
    (!leader.is_null()).then(|| {
        (
            leader["term"].as_u64().expect("a term"),
            leader["value"].as_str().expect("a value").to_owned(),
        )
    })
}

#[test]
fn one_leader_at_a_time_and_observers_see_every_change_in_order() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        let mut observer = observe(&server, None).await;
        let first = observer.next().await.expect("the leader now");
        assert_eq!(leader(&first), None, "nobody leads yet");

        // Each campaigner, once elected: checks it leads, writes fenced on
        // its term, proclaims a second value, and resigns.
        let mut campaigners = Vec::new();
        for n in 0..CAMPAIGNERS {
            let client = server.client.clone();
            let url = |path: &str| server.url(path);
            let (campaign, election, put, proclaim, resign) = (
                url("/elections/web"),
                url("/elections/web"),
                url("/store/leader"),
                url("/elections/web/proclaim"),
                url("/elections/web"),
            );
            campaigners.push(tokio::spawn(async move {
                let elected = client
                    .post(&campaign)
                    .json(&json!({"value": format!("c{n}"), "ttl": 60}))
                    .send()
                    .await
                    .expect("campaign");
                assert_eq!(elected.status(), StatusCode::OK);
                let elected = json(elected).await;
                let term = elected["term"].as_u64().expect("a term");
                let now = json(client.get(&election).send().await.expect("GET")).await;
                assert_eq!(now["leader"]["term"], term, "{now}");
                let fenced = client
                    .put(&put)
                    .header("If-Fence", format!("web={term}"))
                    .body(format!("c{n}"))
                    .send()
                    .await
                    .expect("PUT");
                assert!(fenced.status().is_success(), "{}", fenced.status());
                let proclaimed = client
                    .post(&proclaim)
                    .json(&json!({"term": term, "value": format!("c{n}+")}))
                    .send()
                    .await
                    .expect("proclaim");
                assert_eq!(proclaimed.status(), StatusCode::OK);
                let resigned = client
                    .delete(format!("{resign}?term={term}"))
                    .send()
                    .await
                    .expect("resign");
                assert_eq!(resigned.status(), StatusCode::NO_CONTENT);
                // Its term leads no more.
                let stale = client
                    .post(&proclaim)
                    .json(&json!({"term": term, "value": "late"}))
                    .send()
                    .await
                    .expect("proclaim");
                assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
                term
            }));
        }
        let mut terms = Vec::new();
        for campaigner in campaigners {
            terms.push(campaigner.await.expect("a campaigner"));
        }
        terms.sort_unstable();

        // Every leader in order of term, each with its value then the one
        // it proclaimed, and nobody at the end.
        let events = observer.take(2 * CAMPAIGNERS + 1).await;
        let seen: Vec<Option<(u64, String)>> = events.iter().map(leader).collect();
        let mut expected = Vec::new();
        for term in &terms {
            let value = seen
                .iter()
                .flatten()
                .find(|(t, _)| t == term)
                .map(|(_, value)| value.clone())
                .expect("every leader observed");
            expected.push(Some((*term, value.clone())));
            expected.push(Some((*term, format!("{value}+"))));
        }
        expected.push(None);
        assert_eq!(seen, expected);
        let revisions: Vec<u64> = events.iter().filter_map(|event| event.id).collect();
        assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");

        // Resumed after any event: the same changes after it, none twice.
        for cut in [0, 3, 2 * CAMPAIGNERS - 1] {
            let mut resumed = observe(&server, events[cut].id).await;
            let again = resumed.take(events.len() - cut - 1).await;
            assert_eq!(again, events[cut + 1..], "resumed after event {cut}");
        }
        // The same from the first event of all: the observation's own.
        let mut resumed = observe(&server, first.id).await;
        assert_eq!(resumed.take(events.len()).await, events);
    });
}

#[test]
fn a_campaign_that_waits_too_long_leaves_the_line() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        let elected = server
            .post_json("/elections/web", &json!({"value": "a", "ttl": 60}))
            .await;
        assert_eq!(elected.status(), StatusCode::OK);
        let elected = json(elected).await;
        let late = server
            .post_json(
                "/elections/web",
                &json!({"value": "b", "ttl": 60, "wait": 1}),
            )
            .await;
        problem(late, StatusCode::LOCKED).await;
        let now = json(server.get("/elections/web").await).await;
        assert_eq!(now["candidates"], 0, "{now}");
        assert_eq!(now["leader"]["value"], "a");
        assert_eq!(now["leader"]["term"], elected["term"]);
        let resigned = server
            .request(Method::DELETE, "/elections/web?term=1000000")
            .send()
            .await
            .expect("resign");
        let body = problem(resigned, StatusCode::PRECONDITION_FAILED).await;
        assert_eq!(body["type"], "urn:kv-store:problem:fence-lost");
        let bad = server
            .request(Method::GET, "/elections/web/observe")
            .header("Last-Event-ID", "x")
            .send()
            .await
            .expect("observe");
        problem(bad, StatusCode::BAD_REQUEST).await;
    });
}

/// A campaign on a lease already in line takes its place again with the
/// new value (etcd's `Campaign` proclaims it).
#[test]
fn campaigning_again_on_the_same_lease_sets_the_new_value() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        let lease = json(server.post_json("/leases", &json!({"ttl": 60})).await).await;
        let lease = lease["id"].as_str().expect("an id").to_owned();
        let first = json(
            server
                .post_json("/elections/web", &json!({"value": "a:1", "lease": lease}))
                .await,
        )
        .await;
        let again = server
            .post_json("/elections/web", &json!({"value": "a:2", "lease": lease}))
            .await;
        assert_eq!(again.status(), StatusCode::OK);
        let again = json(again).await;
        assert_eq!(again["term"], first["term"], "the same place in line");
        let now = json(server.get("/elections/web").await).await;
        assert_eq!(now["leader"]["value"], "a:2", "{now}");
    });
}

/// A revision that changes the line in several places at once is one
/// change for observers: a prefix delete of the leader and the next in
/// line shows nobody leading, never the next one leading for a moment.
#[test]
fn one_revision_is_one_change_for_observers() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        let elected = server
            .post_json("/elections/web", &json!({"value": "a", "ttl": 60}))
            .await;
        assert_eq!(elected.status(), StatusCode::OK);
        let mut line = Sse::new(server.get("/watch?prefix=web/").await);
        line.snapshot().await;
        let request = server
            .request(Method::POST, "/elections/web")
            .header("content-type", "application/json")
            .body(json!({"value": "b", "ttl": 60}).to_string());
        let waiting = tokio::spawn(async move { request.send().await.expect("POST") });
        line.next().await.expect("the second campaigner joins");
        let mut observer = observe(&server, None).await;
        let now = observer.next().await.expect("the leader now");
        assert_eq!(leader(&now).map(|(_, value)| value).as_deref(), Some("a"));

        let deleted = server
            .request(Method::DELETE, "/store?prefix=web/")
            .send()
            .await
            .expect("DELETE");
        let deleted = json(deleted).await;
        assert_eq!(deleted["deleted"], 2);
        let next = observer.next().await.expect("a change");
        assert_eq!(leader(&next), None, "nobody leads: {:?}", next.data);
        assert_eq!(next.id, deleted["revision"].as_u64());
        // The second campaigner's place went with the delete.
        let lost = waiting.await.expect("the campaigner");
        problem(lost, StatusCode::CONFLICT).await;
    });
}
