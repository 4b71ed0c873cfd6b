//! A full disk, for real: a small tmpfs as the data dir. Writes answer 507
//! and leave nothing behind, reads keep working, and once the file system
//! grows, writes work again and everything acknowledged is still there after
//! a restart.
//!
//! Mounting needs root, so the test is ignored by default; `.ci/run` runs it
//! (`cargo test --test disk_full -- --ignored`).

// A binary of its own (it must run alone): it uses a part of the helpers.
#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::ServerProcess;
use reqwest::{Client, StatusCode};

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root");
        Self(dir.to_owned())
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

async fn put(client: &Client, url: &str, key: &str, value: &str) -> reqwest::Response {
    client
        .put(format!("{url}/store/{key}"))
        .body(value.to_owned())
        .send()
        .await
        .expect("PUT")
}

async fn get(client: &Client, url: &str, key: &str) -> (StatusCode, String) {
    let response = client
        .get(format!("{url}/store/{key}"))
        .send()
        .await
        .expect("GET");
    (response.status(), response.text().await.expect("body"))
}

#[tokio::test]
#[ignore = "needs root to mount a tmpfs; .ci/run runs it"]
async fn a_full_disk_refuses_writes_with_507_and_recovers() {
    let mount_point = tempfile::tempdir().expect("temp dir");
    let tmpfs = Tmpfs::mount(mount_point.path(), "6m");
    let data_dir = mount_point.path().join("data");
    let client = Client::new();
    let server = ServerProcess::start(&data_dir, &[]);
    let url = server.url.clone();

    let value = |n: usize| format!("{n:0>8}").repeat(64 * 1024); // 512 KiB
    let mut acked = Vec::new();
    let refused = loop {
        let n = acked.len();
        assert!(n < 64, "32 MiB went into a 6 MiB file system");
        let key = format!("big{n}");
        let response = put(&client, &url, &key, &value(n)).await;
        match response.status() {
            StatusCode::CREATED => acked.push(key),
            StatusCode::INSUFFICIENT_STORAGE => {
                let problem = common::problem(response, StatusCode::INSUFFICIENT_STORAGE).await;
                assert_eq!(problem["type"], "urn:kv-store:problem:insufficient-storage");
                break key;
            }
            other => panic!("PUT {key}: {other}"),
        }
    };
    assert!(!acked.is_empty(), "some writes fit before the disk filled");

    // Nothing of the refused write, and reads still work.
    assert_eq!(get(&client, &url, &refused).await.0, StatusCode::NOT_FOUND);
    for (n, key) in acked.iter().enumerate() {
        assert_eq!(get(&client, &url, key).await, (StatusCode::OK, value(n)));
    }
    let small = put(&client, &url, "small", "still full?").await;
    assert!(
        small.status() == StatusCode::INSUFFICIENT_STORAGE || small.status().is_success(),
        "{}",
        small.status()
    );

    // Space returns: writes work again.
    tmpfs.resize("256m");
    let retried = put(&client, &url, &refused, "after").await;
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert!(server.stop().success(), "clean exit");

    let server = ServerProcess::start(&data_dir, &[]);
    for (n, key) in acked.iter().enumerate() {
        assert_eq!(
            get(&client, &server.url, key).await,
            (StatusCode::OK, value(n))
        );
    }
    assert_eq!(
        get(&client, &server.url, &refused).await,
        (StatusCode::OK, "after".to_owned())
    );
    assert!(server.stop().success(), "clean exit");
}
