//! Real etcd members (Debian's `etcd-server`) on loopback, for the tests
//! that run against `--backend etcd`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::PATIENCE;

/// Which backend the parity suites run against: `KV_TEST_BACKEND=etcd`
/// (with a build of `--features etcd`), or the memory store.
pub fn wanted() -> bool {
    match std::env::var("KV_TEST_BACKEND").as_deref() {
        Ok("etcd") => true,
        Ok("memory") | Err(_) => false,
        Ok(other) => panic!("KV_TEST_BACKEND={other:?}: use memory or etcd"),
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// One etcd member started by the tests.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    data_dir: tempfile::TempDir,
    /// Flags for TLS on the client URL.
    tls: Vec<String>,
    /// Another address it serves clients on, at the same port.
    pub also_on: Option<String>,
    child: Option<Child>,
}

impl Member {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            client_url: format!("http://127.0.0.1:{}", free_port()),
            also_on: None,
            peer_url: format!("http://127.0.0.1:{}", free_port()),
            data_dir: tempfile::tempdir().expect("a data dir for etcd"),
            tls: Vec::new(),
            child: None,
        }
    }

    /// Starts (or restarts) the member; `cluster` is every member's
    /// `name=peer_url`.
    fn start(&mut self, cluster: &str, state: &str) {
        let mut command = Command::new("etcd");
        let mut clients = self.client_url.clone();
        if let Some(also) = &self.also_on {
            clients = format!("{clients},{also}");
        }
        command
            .args(["--name", &self.name, "--data-dir"])
            .arg(self.data_dir.path())
            .args(["--listen-client-urls", &clients])
            .args(["--advertise-client-urls", &clients])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", cluster])
            .args(["--initial-cluster-state", state])
            .args(["--max-txn-ops", "1024"])
            .args(&self.tls)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // The member dies with the thread that started it, however that
        // ends (so with the test, or the process).
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|err| {
            panic!(
                "KV_TEST_BACKEND=etcd needs the `etcd` binary on PATH (Debian: apt-get install \
                 etcd-server): {err}"
            )
        });
        self.child = Some(child);
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the member says it is healthy (it has a leader).
    pub fn healthy(&self) -> bool {
        let address = self.client_url.trim_start_matches("http://");
        let Ok(mut stream) = TcpStream::connect(address) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /health HTTP/1.0\r\nHost: {address}\r\n\r\n");
        let mut answer = String::new();
        stream.write_all(request.as_bytes()).is_ok()
            && stream.read_to_string(&mut answer).is_ok()
            && answer.contains("\"health\":\"true\"")
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Members of one cluster.
pub struct Cluster {
    pub members: Vec<Member>,
}

impl Cluster {
    /// Starts `size` members and waits until they have a leader.
    pub fn start(size: usize) -> Self {
        Self::start_also_on(size, None)
    }

    /// Starts `size` members that also serve clients on `host` (an
    /// address of this machine), and waits until they have a leader.
    pub fn start_also_on(size: usize, host: Option<&str>) -> Self {
        let mut members: Vec<Member> = (0..size).map(|n| Member::new(&format!("m{n}"))).collect();
        if let Some(host) = host {
            for member in &mut members {
                let port = member.client_url.rsplit(':').next().unwrap_or_default();
                member.also_on = Some(format!("http://{host}:{port}"));
            }
        }
        let cluster = Self::initial(&members);
        for member in &mut members {
            member.start(&cluster, "new");
        }
        let cluster = Self { members };
        cluster.wait_healthy();
        cluster
    }

    fn initial(members: &[Member]) -> String {
        members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One member serving clients over TLS only, with the server
    /// certificate and key (PEM files), asking clients for a certificate
    /// signed by `ca`; healthy once it has elected itself.
    #[allow(
        dead_code,
        reason = "used by the tests that run alone: crash, cluster, consistency"
    )]
    pub fn start_tls(ca: &Path, cert: &Path, key: &Path) -> Self {
        let mut member = Member::new("tls");
        member.client_url = member.client_url.replace("http://", "https://");
        for (flag, file) in [
            ("--trusted-ca-file", ca),
            ("--cert-file", cert),
            ("--key-file", key),
        ] {
            member.tls.push(flag.to_owned());
            member.tls.push(file.display().to_string());
        }
        member.tls.push("--client-cert-auth".to_owned());
        let cluster = Self::initial(std::slice::from_ref(&member));
        member.start(&cluster, "new");
        let cluster = Self {
            members: vec![member],
        };
        // Its health endpoint wants a client certificate too: wait for the
        // port, then let the kv-store node's readiness say the rest.
        let address = cluster.members[0]
            .client_url
            .trim_start_matches("https://")
            .to_owned();
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "etcd listens");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// Restarts a stopped member with its data.
    #[allow(
        dead_code,
        reason = "used by the tests that run alone: crash, cluster, consistency"
    )]
    pub fn restart(&mut self, index: usize) {
        let cluster = Self::initial(&self.members);
        self.members[index].start(&cluster, "existing");
    }

    /// Waits until every running member reports healthy.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + PATIENCE;
        while !self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .all(Member::healthy)
        {
            assert!(Instant::now() < deadline, "etcd members became healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client URLs on the other address, comma-separated.
    #[allow(
        dead_code,
        reason = "used by the tests that run alone: crash, cluster, consistency"
    )]
    pub fn endpoints_also_on(&self) -> String {
        self.members
            .iter()
            .filter_map(|m| m.also_on.as_deref())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URLs, comma-separated, for `--etcd-endpoints`.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}
