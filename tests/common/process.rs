//! The server as a separate process (the real binary), for what an
//! in-process server cannot show: restarts, `kill -9`, exit codes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;

use super::PATIENCE;

pub struct ServerProcess {
    child: Child,
    pub url: String,
    /// The lines the server logs after the one with its address.
    pub logs: mpsc::Receiver<String>,
}

/// The command for the binary with a data dir, rate limiting off and an
/// ephemeral port.
pub fn command(data_dir: &Path, flags: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kv-store"));
    command
        .args(["--listen", "127.0.0.1:0", "--rate-limit", "0", "--data-dir"])
        .arg(data_dir)
        .args(flags)
        .env("NO_COLOR", "1")
        // A line per request would flood the test's output (tests/it/cli.rs
        // turns it back on to test it).
        .env("KV_ACCESS_LOG", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// The command for the binary on the memory store without a data dir,
/// rate limiting off and an ephemeral port.
pub fn in_memory(flags: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kv-store"));
    command
        .args(["--listen", "127.0.0.1:0", "--rate-limit", "0"])
        .args(flags)
        .env("NO_COLOR", "1")
        // A line per request would flood the test's output (tests/it/cli.rs
        // turns it back on to test it).
        .env("KV_ACCESS_LOG", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

/// The command for the binary on etcd at `endpoints`, rate limiting off
/// and an ephemeral port.
#[allow(
    dead_code,
    reason = "used by the tests that run alone: crash, cluster, consistency"
)]
pub fn on_etcd(endpoints: &str, flags: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kv-store"));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--rate-limit",
            "0",
            "--backend",
            "etcd",
        ])
        .args(["--etcd-endpoints", endpoints])
        .args(flags)
        .env("NO_COLOR", "1")
        // A line per request would flood the test's output (tests/it/cli.rs
        // turns it back on to test it).
        .env("KV_ACCESS_LOG", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

impl ServerProcess {
    /// Starts the server and waits until it logs the address it serves.
    pub fn start(data_dir: &Path, flags: &[&str]) -> Self {
        Self::spawn(command(data_dir, flags))
    }

    /// Runs `command` (which starts the server with its stdout piped) and
    /// waits until the server logs the address it serves.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command.spawn().expect("server starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, logs) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading to the end so the server never blocks on its log.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Shown with the test's output when it fails.
                eprintln!("server: {line}");
                let _ = lines.send(line);
            }
        });
        let url = loop {
            let line = logs
                .recv_timeout(PATIENCE)
                .expect("the server logs its address");
            if let Some(at) = line.find("listening on http") {
                let rest = &line[at + "listening on ".len()..];
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        };
        Self { child, url, logs }
    }

    /// The process id, for reading its CPU time.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory now, in bytes (`VmRSS`).
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/PID/status (Linux)");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .expect("VmRSS in /proc/PID/status")
    }

    /// `kill -9`: no shutdown, no flush.
    #[allow(
        dead_code,
        reason = "used by the tests that run alone: crash, cluster, consistency"
    )]
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.child.wait().expect("exits")
    }
}

/// `GET /status` of a server at `url`.
pub async fn status(client: &reqwest::Client, url: &str) -> serde_json::Value {
    client
        .get(format!("{url}/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("JSON status")
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
