//! The backup file: JSON lines, written by `GET /backup` and read back by
//! `kv-store restore`, which builds a data dir from it.
//!
//! ```text
//! {"kv_store_backup":1,"revision":R,"leases":N}
//! {"lease":"00000000000000c1","ttl":30,"owner":"ops"}            N lines
//! {"key":"k","value":"v","create_revision":3,"mod_revision":9,"version":2,
//!  "lease":"00000000000000c1","expires_unix_ms":1764892800000}   a line a key
//! {"end":true,"keys":K,"sha256":"<hex of every byte before this line>"}
//! ```
//!
//! The last line's checksum covers the whole file before it, so a file cut
//! short (no last line) or altered (another checksum) is refused whole.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::domain::{Entry, LeaseBackup, LeaseId, Meta};
use crate::store;

/// The format's version, in the first line.
pub const VERSION: u64 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    kv_store_backup: u64,
    revision: u64,
    leases: u64,
}

#[derive(Serialize, Deserialize)]
struct LeaseLine {
    lease: String,
    ttl: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    owner: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct KeyLine {
    key: String,
    value: String,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    lease: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    expires_unix_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct End {
    end: bool,
    keys: u64,
    sha256: String,
}

/// Writes the lines of a backup, keeping the checksum of what it wrote.
#[derive(Default)]
pub struct Writer {
    digest: Sha256,
    keys: u64,
}

impl Writer {
    fn line(&mut self, value: &impl Serialize) -> Vec<u8> {
        // The lines hold strings and numbers only, which serialise.
        let mut line = serde_json::to_vec(value).unwrap_or_default();
        line.push(b'\n');
        self.digest.update(&line);
        line
    }

    /// The first line.
    pub fn header(&mut self, revision: u64, leases: usize) -> Vec<u8> {
        self.line(&Header {
            kv_store_backup: VERSION,
            revision,
            leases: leases as u64,
        })
    }

    pub fn lease(&mut self, lease: &LeaseBackup) -> Vec<u8> {
        self.line(&LeaseLine {
            lease: lease.id.to_string(),
            ttl: lease.ttl,
            owner: lease.owner.as_deref().map(str::to_owned),
        })
    }

    pub fn key(&mut self, entry: &Entry) -> Vec<u8> {
        self.keys += 1;
        let meta = entry.meta();
        let expires_unix_ms = entry.deadline_unix_millis();
        self.line(&KeyLine {
            key: entry.key().to_owned(),
            value: entry.value_str().to_owned(),
            create_revision: meta.create_revision,
            mod_revision: meta.mod_revision,
            version: meta.version,
            lease: meta.lease.map(|lease| lease.to_string()),
            expires_unix_ms,
        })
    }

    /// The last line: how many keys, and the checksum of all before it.
    pub fn end(self) -> Vec<u8> {
        let sha256 = hex(&self.digest.finalize());
        let mut line = serde_json::to_vec(&End {
            end: true,
            keys: self.keys,
            sha256,
        })
        .unwrap_or_default();
        line.push(b'\n');
        line
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What a restore wrote.
#[derive(Debug)]
pub struct Restored {
    pub revision: u64,
    pub keys: u64,
    pub leases: u64,
}

/// Why a restore refused or failed; nothing is left in the data dir then.
#[derive(Debug)]
pub struct RestoreError(pub String);

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RestoreError {}

/// Checks the backup at `from` (read twice: checked whole before anything
/// is written), then builds a data dir at `dir` (which must hold no store)
/// with its keys and leases at its revision.
pub fn restore(from: &Path, dir: &Path) -> Result<Restored, RestoreError> {
    let open = || {
        std::fs::File::open(from)
            .map(BufReader::new)
            .map_err(|err| RestoreError(format!("cannot read {}: {err}", from.display())))
    };
    let summary = check(open()?, from)?;
    let mut lines = open()?.lines();
    let bad = |what: String| RestoreError(format!("{}: {what}", from.display()));
    let mut next = || -> Result<String, RestoreError> {
        lines
            .next()
            .transpose()
            .map_err(|err| bad(err.to_string()))?
            .ok_or_else(|| bad("it ends early".to_owned()))
    };
    let header: Header = parse(&next()?).map_err(bad)?;
    let mut leases = Vec::with_capacity(usize::try_from(header.leases).unwrap_or(0));
    for _ in 0..header.leases {
        let line: LeaseLine = parse(&next()?).map_err(bad)?;
        let id = LeaseId::parse(&line.lease)
            .ok_or_else(|| bad(format!("{:?} is no lease id", line.lease)))?;
        leases.push(LeaseBackup {
            id,
            ttl: line.ttl,
            owner: line.owner.map(Arc::from),
        });
    }
    let entries = (0..summary.keys).map(|_| -> Result<Entry, RestoreError> {
        let line: KeyLine = parse(&next()?).map_err(bad)?;
        let lease = match &line.lease {
            Some(lease) => Some(
                LeaseId::parse(lease).ok_or_else(|| bad(format!("{lease:?} is no lease id")))?,
            ),
            None => None,
        };
        let deadline = line.expires_unix_ms.map(|millis| {
            let wall = UNIX_EPOCH + Duration::from_millis(millis);
            Instant::now() + wall.duration_since(SystemTime::now()).unwrap_or_default()
        });
        let meta = Meta {
            create_revision: line.create_revision,
            mod_revision: line.mod_revision,
            version: line.version,
            lease,
        };
        Ok(Entry::new(&line.key, line.value.as_bytes(), meta, deadline))
    });
    let keys = store::write_data_dir(dir, header.revision, &leases, entries)
        .map_err(|err| RestoreError(format!("cannot build the data dir: {err}")))?;
    Ok(Restored {
        revision: header.revision,
        keys,
        leases: leases.len() as u64,
    })
}

/// What the first pass found: the file is whole and unaltered.
struct Summary {
    keys: u64,
}

/// Reads the whole file, checking the first line's format and the last
/// line's checksum over everything before it.
fn check(reader: impl BufRead, from: &Path) -> Result<Summary, RestoreError> {
    let bad = |what: &str| RestoreError(format!("{}: {what}", from.display()));
    let mut digest = Sha256::new();
    let mut lines = 0u64;
    let mut end: Option<End> = None;
    let mut first = true;
    for line in reader.split(b'\n') {
        let line = line.map_err(|err| bad(&err.to_string()))?;
        if end.is_some() {
            return Err(bad("it goes on after its last line; it was altered"));
        }
        if first {
            let header: Header = parse_bytes(&line).map_err(|err| bad(&err))?;
            if header.kv_store_backup != VERSION {
                return Err(bad(&format!(
                    "it is a backup of format {}; this kv-store reads format {VERSION}",
                    header.kv_store_backup
                )));
            }
            first = false;
        } else if let Ok(last) = serde_json::from_slice::<End>(&line)
            && last.end
        {
            end = Some(last);
            continue;
        }
        digest.update(&line);
        digest.update(b"\n");
        lines += 1;
    }
    if first {
        return Err(bad("it is empty"));
    }
    let Some(end) = end else {
        return Err(bad(
            "it has no last line (with its checksum): it was cut short; take the backup again",
        ));
    };
    if hex(&digest.finalize()) != end.sha256 {
        return Err(bad(
            "its checksum does not match its contents: it was altered or damaged",
        ));
    }
    if lines < 1 + end.keys {
        return Err(bad("it holds fewer lines than its last line says"));
    }
    Ok(Summary { keys: end.keys })
}

fn parse<T: for<'a> Deserialize<'a>>(line: &str) -> Result<T, String> {
    parse_bytes(line.as_bytes())
}

fn parse_bytes<T: for<'a> Deserialize<'a>>(line: &[u8]) -> Result<T, String> {
    serde_json::from_slice(line).map_err(|err| format!("a line is not what a backup holds: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup() -> Vec<u8> {
        let mut writer = Writer::default();
        let mut out = writer.header(7, 1);
        let lease = LeaseBackup {
            id: LeaseId::new(0xc1).expect("an id"),
            ttl: 30,
            owner: None,
        };
        out.extend(writer.lease(&lease));
        let meta = Meta {
            create_revision: 3,
            mod_revision: 7,
            version: 2,
            lease: Some(lease.id),
        };
        out.extend(writer.key(&Entry::new("a", b"1", meta, None)));
        out.extend(writer.end());
        out
    }

    #[test]
    fn a_whole_backup_checks_and_a_damaged_one_does_not() {
        let whole = backup();
        let path = Path::new("backup");
        assert_eq!(check(&whole[..], path).map(|s| s.keys).ok(), Some(1));
        assert_eq!(whole.iter().filter(|b| **b == b'\n').count(), 4);
        let cut = &whole[..whole.len() - 20];
        let err = check(cut, path).err().map(|e| e.0).unwrap_or_default();
        assert!(err.contains("cut short"), "{err}");
        let mut altered = whole.clone();
        let value = altered
            .windows(11)
            .position(|window| window == b"\"value\":\"1\"")
            .expect("the key's value");
        altered[value + 9] = b'2';
        let err = check(&altered[..], path)
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        assert!(err.contains("altered"), "{err}");
        let err = check(&b""[..], path).err().map(|e| e.0).unwrap_or_default();
        assert!(err.contains("empty"), "{err}");
    }
}
