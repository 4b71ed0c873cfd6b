//! Listings as etcd ranges: every page of a listing is read at the first
//! page's revision, so etcd's MVCC gives the same snapshot the memory
//! store's history does, until etcd compacts that revision (then 410).

use etcd_client::{GetOptions, KeyValue};

use super::{EtcdStore, Failure, revision};
use crate::domain::{Page, RangeError, RangeRequest, ReadPoint};

/// The first key after every key starting with `prefix` (etcd's range end
/// for a prefix); `[0]` (etcd's "to the end") when there is none.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    pub async fn range(&self, request: &RangeRequest<'_>) -> Result<Page, RangeError> {
        let prefix = self.full(request.prefix);
        let end = self.keys_end(&prefix);
        // Start after the cursor's key: the key with a zero byte appended.
        let start = match request.after {
            Some(after) if after.as_bytes() >= request.prefix.as_bytes() => {
                let mut start = self.full(after);
                start.push(0);
                start
            }
            _ => prefix.clone(),
        };
        let at = request
            .at
            .map_or(0, |at| i64::try_from(at.revision).unwrap_or(i64::MAX));
        let limit = request.limit.max(1);
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .with_revision(at);
        if request.keys_only {
            options = options.with_keys_only();
        }
        let answer = self
            .read(start, Some(options))
            .await
            .map_err(|failure| self.range_error(failure, request.at))?;
        let read_at = answer
            .header()
            .map_or(0, |header| revision(header.revision()));
        let at = request.at.unwrap_or_else(|| ReadPoint::now(read_at));
        let mut entries: Vec<&KeyValue> = Vec::with_capacity(answer.kvs().len());
        let mut bytes = 0;
        let mut more = answer.more();
        for kv in answer.kvs() {
            let size =
                kv.key().len() - self.inner.namespace.len().min(kv.key().len()) + kv.value().len();
            if !entries.is_empty() && bytes + size > request.max_bytes {
                more = true;
                break;
            }
            bytes += size;
            entries.push(kv);
        }
        let deadlines = self
            .ttl_deadlines(&entries)
            .await
            .map_err(|failure| self.range_error(failure, request.at))?;
        let entries = entries
            .into_iter()
            .map(|kv| {
                let deadline = deadlines.get(&kv.lease()).copied();
                self.entry_until(kv, deadline)
            })
            .collect();
        let count = if request.count {
            let options = GetOptions::new()
                .with_range(end)
                .with_count_only()
                .with_revision(i64::try_from(at.revision).unwrap_or(i64::MAX));
            let counted = self
                .read(prefix, Some(options))
                .await
                .map_err(|failure| self.range_error(failure, Some(at)))?;
            Some(u64::try_from(counted.count()).unwrap_or(0))
        } else {
            None
        };
        Ok(Page {
            at,
            entries,
            more,
            count,
        })
    }

    fn range_error(&self, failure: Failure, at: Option<ReadPoint>) -> RangeError {
        let asked = at.map_or(0, |at| at.revision);
        match failure {
            // etcd does not say how far it compacted: the revision after
            // the one asked for is the least it can be.
            Failure::Compacted => RangeError::Compacted { oldest: asked + 1 },
            Failure::Future => RangeError::Unknown {
                current: self.inner.hub.stats().revision,
                oldest: asked,
            },
            other => RangeError::Unavailable(other.to_string().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_successor() {
        assert_eq!(prefix_end(b"kv/a"), b"kv/b");
        assert_eq!(prefix_end(b"a\xff\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), [0]);
    }
}
