//! Leases over HTTP: many keys on one TTL, kept alive together, gone
//! together at one revision.

use crate::common::{Sse, TestServer, etcd, json, on_test_clock, problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::time::Duration;

async fn grant(server: &TestServer, body: Json) -> Json {
    let response = server.post_json("/leases", &body).await;
    assert_eq!(response.status(), StatusCode::CREATED, "{body}");
    json(response).await
}

async fn put_on(server: &TestServer, key: &str, lease: &str) -> StatusCode {
    server
        .request(Method::PUT, &format!("/store/{key}?lease={lease}"))
        .body("up")
        .send()
        .await
        .expect("PUT")
        .status()
}

fn id(lease: &Json) -> String {
    lease["id"].as_str().expect("an id").to_owned()
}

#[test]
fn keys_on_a_lease_go_together_at_one_revision() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        let lease = grant(&server, json!({"ttl": 1})).await;
        let lease = id(&lease);
        assert_eq!(lease.len(), 16, "16 hex digits");
        // Every kind of put can name it.
        assert_eq!(
            put_on(&server, "svc%2Fa", &lease).await,
            StatusCode::CREATED
        );
        let batch = server
            .post_json(
                "/batch",
                &json!([{"method": "PUT", "key": "svc/b", "value": "up", "lease": lease}]),
            )
            .await;
        assert_eq!(batch.status(), StatusCode::OK);
        let txn = server
            .post_json(
                "/txn",
                &json!({"then": [{"op": "PUT", "key": "svc/c", "value": "up", "lease": lease}]}),
            )
            .await;
        assert_eq!(txn.status(), StatusCode::OK);
        let cas = server
            .post_json(
                "/store/cas/svc%2Fd",
                &json!({"expected": null, "new": "up", "lease": lease}),
            )
            .await;
        assert_eq!(cas.status(), StatusCode::NO_CONTENT);
        let keys = ["svc/a", "svc/b", "svc/c", "svc/d"];

        // A key shows its lease: GET's header, listings, watch events.
        let got = server.get("/store/svc%2Fa").await;
        assert_eq!(
            got.headers().get("kv-lease").map(|v| v.as_bytes()),
            Some(lease.as_bytes())
        );
        let listed = json(server.get("/store?prefix=svc/").await).await;
        for item in listed["items"].as_array().expect("items") {
            assert_eq!(item["lease"], lease.as_str(), "{item}");
        }
        let read = json(server.get(&format!("/leases/{lease}?keys=true")).await).await;
        assert_eq!(read["keys"], json!(keys));
        // etcd raises a TTL to its minimum (about 2 s).
        let granted = read["granted_ttl"].as_u64().expect("granted_ttl");
        assert!(granted == 1 || (etcd::wanted() && granted <= 3), "{read}");

        let mut watch = Sse::new(server.get("/watch?prefix=svc/").await);
        let (snapshot, _) = watch.snapshot().await;
        assert!(
            snapshot
                .iter()
                .all(|event| event.data["lease"] == lease.as_str())
        );

        // Nobody keeps it alive: all four go, at one revision, in key order.
        let gone = watch.take(4).await;
        // etcd deletes a lease's keys like any other (README: "Backends").
        let kind = if etcd::wanted() { "delete" } else { "expire" };
        let revision = gone[0].id.expect("an id");
        for (part, (event, key)) in gone.iter().zip(keys).enumerate() {
            assert_eq!(
                (event.event.as_str(), event.key(), event.id, event.part),
                (kind, key, Some(revision), Some(part as u32))
            );
        }
        problem(
            server.get(&format!("/leases/{lease}")).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        let kept = server
            .request(Method::POST, &format!("/leases/{lease}/keepalive"))
            .send()
            .await
            .expect("keepalive");
        let body = problem(kept, StatusCode::NOT_FOUND).await;
        assert_eq!(body["type"], "urn:kv-store:problem:lease-not-found");
        if !etcd::wanted() {
            let metrics = server.get("/metrics").await.text().await.expect("text");
            assert!(metrics.contains("kv_expired_leases_total 1"), "{metrics}");
            assert!(metrics.contains("kv_leases 0"), "{metrics}");
        }
    });
}

#[test]
fn keep_alive_restores_the_ttl_and_revoke_deletes_the_keys() {
    on_test_clock(async {
        let server = TestServer::start(&[]).await;
        let chosen = "00000000000000aa";
        let lease = grant(&server, json!({"ttl": 4, "id": chosen})).await;
        assert_eq!(lease["id"], chosen);
        let again = server
            .post_json("/leases", &json!({"ttl": 4, "id": chosen}))
            .await;
        let body = problem(again, StatusCode::CONFLICT).await;
        assert_eq!(body["type"], "urn:kv-store:problem:lease-exists");
        for key in ["a", "b", "c", "d"] {
            assert_eq!(put_on(&server, key, chosen).await, StatusCode::CREATED);
        }
        // A put without the lease takes a key off it; a TTL does too.
        assert_eq!(
            server.put("c", "mine").await.status(),
            StatusCode::NO_CONTENT
        );
        let ttl = server
            .request(Method::PUT, "/store/d?ttl=600")
            .body("mine")
            .send()
            .await
            .expect("PUT");
        assert_eq!(ttl.status(), StatusCode::NO_CONTENT);

        // Kept alive past its TTL, the lease and its keys stay.
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let kept = server
                .request(Method::POST, &format!("/leases/{chosen}/keepalive"))
                .send()
                .await
                .expect("keepalive");
            assert_eq!(kept.status(), StatusCode::OK);
            assert_eq!(json(kept).await, json!({"id": chosen, "ttl": 4}));
        }
        let read = json(server.get(&format!("/leases/{chosen}?keys=true")).await).await;
        assert_eq!(read["keys"], json!(["a", "b"]));
        let listed = json(server.get("/leases").await).await;
        assert_eq!(listed, json!({"leases": [{"id": chosen}], "next": null}));

        let mut watch = Sse::new(server.get("/watch?prefix=").await);
        let (snapshot, _) = watch.snapshot().await;
        // Only keys: not what the server keeps beside them (on etcd, who
        // holds each lease).
        let keys: Vec<&str> = snapshot.iter().map(|event| event.key()).collect();
        assert_eq!(keys, ["a", "b", "c", "d"]);
        let revoked = server
            .request(Method::DELETE, &format!("/leases/{chosen}"))
            .send()
            .await
            .expect("revoke");
        assert_eq!(revoked.status(), StatusCode::OK);
        let revision = json(revoked).await["revision"].as_u64().expect("revision");
        let gone = watch.take(2).await;
        let seen: Vec<_> = gone
            .iter()
            .map(|event| (event.event.as_str(), event.key(), event.id))
            .collect();
        assert_eq!(
            seen,
            [
                ("delete", "a", Some(revision)),
                ("delete", "b", Some(revision))
            ]
        );
        for (key, status) in [
            ("a", StatusCode::NOT_FOUND),
            ("c", StatusCode::OK),
            ("d", StatusCode::OK),
        ] {
            assert_eq!(server.get(&format!("/store/{key}")).await.status(), status);
        }
        let twice = server
            .request(Method::DELETE, &format!("/leases/{chosen}"))
            .send()
            .await
            .expect("revoke");
        problem(twice, StatusCode::NOT_FOUND).await;
    });
}

#[tokio::test]
async fn a_write_naming_a_missing_lease_writes_nothing() {
    let server = TestServer::start(&[]).await;
    let missing = "00000000000000ff";
    let body = problem(
        server
            .request(Method::PUT, &format!("/store/k?lease={missing}"))
            .body("v")
            .send()
            .await
            .expect("PUT"),
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(body["type"], "urn:kv-store:problem:lease-not-found");
    let batch = server
        .post_json(
            "/batch",
            &json!([
                {"method": "PUT", "key": "a", "value": "1"},
                {"method": "PUT", "key": "b", "value": "1", "lease": missing}
            ]),
        )
        .await;
    problem(batch, StatusCode::NOT_FOUND).await;
    let txn = server
        .post_json(
            "/txn",
            &json!({"then": [{"op": "PUT", "key": "c", "lease": missing}]}),
        )
        .await;
    problem(txn, StatusCode::NOT_FOUND).await;
    assert_eq!(
        server.status().await["revision"],
        server.base,
        "nothing written"
    );

    for (path, detail) in [
        (
            "/store/k?lease=ab&ttl=5",
            "give `ttl` or `lease`, not both: a key on a lease lives as long as the lease",
        ),
        (
            "/store/k?lease=xyz",
            "lease is not a lease id: 1 to 16 hex digits",
        ),
    ] {
        let response = server
            .request(Method::PUT, path)
            .body("v")
            .send()
            .await
            .expect("PUT");
        let body = problem(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["detail"], detail, "{path}");
    }
    // Hex, but no lease can have it.
    for id in ["0", "8000000000000000"] {
        let response = server
            .request(Method::PUT, &format!("/store/k?lease={id}"))
            .body("v")
            .send()
            .await
            .expect("PUT");
        let body = problem(response, StatusCode::NOT_FOUND).await;
        assert_eq!(
            body["detail"],
            format!("no lease has id {id}: ids run from 1 to 7fffffffffffffff")
        );
    }
    let bad_ttl = server.post_json("/leases", &json!({"ttl": 0})).await;
    problem(bad_ttl, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn a_transaction_guards_on_a_keys_lease() {
    let server = TestServer::start(&[]).await;
    let lease = id(&grant(&server, json!({"ttl": 60})).await);
    assert_eq!(put_on(&server, "k", &lease).await, StatusCode::CREATED);
    server.put("plain", "v").await;
    for (key, operand, holds) in [
        ("k", lease.as_str(), true),
        ("k", "0", false),
        ("plain", "0", true),
        ("absent", "0", true),
        ("plain", lease.as_str(), false),
    ] {
        let answer = server
            .post_json(
                "/txn",
                &json!({"guards": [{"key": key, "compare": "EQUAL", "lease": operand}]}),
            )
            .await;
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(json(answer).await["succeeded"], holds, "{key} {operand}");
    }
    let read = json(
        server
            .post_json("/txn", &json!({"then": [{"op": "GET", "key": "k"}]}))
            .await,
    )
    .await;
    assert_eq!(read["results"][0]["lease"], lease.as_str());
}

#[tokio::test]
async fn past_max_leases_a_grant_is_refused_until_one_goes() {
    let server = TestServer::start_memory(&["--max-leases", "2"]).await;
    let first = id(&grant(&server, json!({"ttl": 60})).await);
    grant(&server, json!({"ttl": 60})).await;
    let third = server.post_json("/leases", &json!({"ttl": 60})).await;
    let body = problem(third, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("--max-leases"),
        "{body}"
    );
    let revoked = server
        .request(Method::DELETE, &format!("/leases/{first}"))
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), StatusCode::OK);
    grant(&server, json!({"ttl": 60})).await;
}
