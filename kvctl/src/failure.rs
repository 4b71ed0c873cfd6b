//! What can go wrong, and the exit code each kind gets (documented in
//! `kvctl --help` and the README).

use std::fmt;

use kv_store_client::{ByteStream, Error};

/// The exit codes, as `--help` lists them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done (the key was found, the write applied, the command held the lock)
  1  the server refused the request, or a local error (a file, a bad answer)
  2  usage: a bad flag or argument
  3  not found: no such key, lease or lock
  4  a condition failed: If-Match, a fence, a lock wait that ran out (412, 409, 423)
  5  unreachable: no endpoint could be connected to
  6  lock lost while its command ran (kvctl lock)
  `kvctl lock NAME -- CMD` exits with CMD's own code when CMD ran to its end,
  127 if CMD could not be started, 128+N if kvctl got signal N while waiting.";

#[derive(Debug)]
pub enum Failure {
    /// The server answered with a problem (RFC 9457).
    Refused {
        status: u16,
        title: String,
        detail: String,
    },
    /// No endpoint could be connected to; what each said.
    Unreachable(String),
    /// The lock was lost while its command ran.
    LockLost(String),
    /// The command to run under a lock could not be started.
    NotRun(String),
    /// A signal (this number) arrived before the work was done.
    Interrupted(i32),
    /// Standard output was closed by its reader (`kvctl watch | head -1`):
    /// nothing more is wanted, which is no error.
    OutputClosed,
    /// A mistake in what was asked, found after parsing.
    Usage(String),
    /// Anything else: a file, a broken connection, an answer not understood.
    Local(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused { status: 404, .. } => 3,
            Failure::Refused {
                status: 409 | 412 | 423,
                ..
            } => 4,
            Failure::Refused { .. } | Failure::Local(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Unreachable(_) => 5,
            Failure::LockLost(_) => 6,
            Failure::NotRun(_) => 127,
            Failure::OutputClosed => 0,
            Failure::Interrupted(signal) => u8::try_from(128 + signal).unwrap_or(1),
        }
    }

    /// The failure a generated call returned, its problem body read.
    pub async fn from_client(error: Error<ByteStream>) -> Self {
        match error {
            Error::ErrorResponse(answer) => {
                let status = answer.status().as_u16();
                let body = crate::connect::read_all(answer.into_inner()).await;
                Failure::refused(status, &body.unwrap_or_default())
            }
            Error::UnexpectedResponse(answer) => {
                let status = answer.status().as_u16();
                let body = answer.bytes().await.unwrap_or_default();
                Failure::refused(status, &body)
            }
            Error::CommunicationError(error) | Error::ResponseBodyError(error) => {
                Failure::Local(chain(&error))
            }
            other => Failure::Local(other.to_string()),
        }
    }

    /// A problem+json body, or whatever else came with the status.
    pub fn refused(status: u16, body: &[u8]) -> Self {
        let problem: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |name: &str| problem[name].as_str().map(str::to_owned);
        Failure::Refused {
            status,
            title: text("title").unwrap_or_default(),
            detail: text("detail")
                .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned()),
        }
    }
}

/// An error and its causes on one line (reqwest's own message names only
/// the outermost: "error sending request").
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused {
                status,
                title,
                detail,
            } => {
                if title.is_empty() {
                    write!(f, "{status}: {detail}")
                } else {
                    write!(f, "{status} {title}: {detail}")
                }
            }
            Failure::Unreachable(why) => write!(f, "no endpoint could be reached ({why})"),
            Failure::LockLost(why) => write!(f, "lock lost: {why}"),
            Failure::NotRun(why) => write!(f, "cannot run {why}"),
            Failure::Interrupted(signal) => write!(f, "stopped by signal {signal}"),
            Failure::OutputClosed => f.write_str("standard output was closed"),
            Failure::Usage(why) | Failure::Local(why) => f.write_str(why),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::BrokenPipe => Failure::OutputClosed,
            _ => Failure::Local(error.to_string()),
        }
    }
}
