//! Leases as etcd's own: any node keeps one alive, revokes it or sees it
//! run out. Who granted a lease is kept beside the keys
//! (`<prefix>\xffleases/<id>`, on the lease itself, so it goes with it);
//! the leases kv-store makes for keys' own TTLs carry a tag in their id,
//! so a key's `lease` never shows one and a listing skips them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{GetOptions, KeyValue, LeaseGrantOptions, LeaseTimeToLiveOptions, PutOptions};
use futures_util::{StreamExt, TryStreamExt};
use tokio::time::Instant;

use super::{EtcdStore, Failure, revision};
use crate::domain::{
    LeaseError, LeaseHeld, LeaseId, LeasePage, LeaseState, Lifetime, StorageError,
};

/// The top bits of the id of a lease kv-store grants for a key's own TTL
/// ("kv"): an id a client is given never has them.
const TTL_TAG: u64 = 0x6b76 << TAG_SHIFT;
const TAG_SHIFT: u32 = 47;

/// How many TTL leases a listing reads from etcd at once.
const TTL_READS: usize = 16;

/// Whether `id` is a lease kv-store granted for a key's own TTL.
pub(super) fn for_a_ttl(id: u64) -> bool {
    id >> TAG_SHIFT == TTL_TAG >> TAG_SHIFT
}

/// A random id: tagged for a key's TTL, or one a client may see.
fn random_id(for_ttl: bool) -> Result<i64, StorageError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|err| {
        StorageError::Unavailable(format!("no randomness for a lease id: {err}").into())
    })?;
    let random = u64::from_le_bytes(bytes);
    let id = if for_ttl {
        TTL_TAG | (random & ((1 << TAG_SHIFT) - 1))
    } else {
        random & LeaseId::MAX
    };
    // Never 0 (no lease) nor, for a client, tagged: draw again.
    if id == 0 || (!for_ttl && for_a_ttl(id)) {
        return random_id(for_ttl);
    }
    Ok(i64::try_from(id).unwrap_or(1))
}

/// Whole seconds for a key's TTL lease, at least 1.
fn lease_seconds(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)
}

/// etcd's id of a lease.
fn etcd_id(id: LeaseId) -> i64 {
    i64::try_from(id.get()).unwrap_or(i64::MAX)
}

fn storage(failure: Failure) -> LeaseError {
    LeaseError::Storage(failure.storage())
}

/// What a failed call on lease `id` means: etcd has no such lease, or it
/// could not answer.
fn on_lease(id: LeaseId) -> impl Fn(Failure) -> LeaseError {
    move |failure| match failure {
        Failure::NoLease => LeaseError::NotFound(id),
        other => storage(other),
    }
}

impl EtcdStore {
    /// The key that says who holds lease `id`.
    fn holder_key(&self, id: LeaseId) -> Vec<u8> {
        self.beside(format!("leases/{id}").as_bytes())
    }

    /// Who holds lease `id` in this namespace (`Some(None)`: no token);
    /// `None`: it is none of kv-store's here (another namespace's, one made
    /// for a key's TTL, or gone), so no call here may touch it.
    async fn holder(&self, id: LeaseId) -> Result<Option<Option<Arc<str>>>, LeaseError> {
        if for_a_ttl(id.get()) {
            return Ok(None);
        }
        let held = self
            .read(self.holder_key(id), None)
            .await
            .map_err(storage)?;
        Ok(held.kvs().first().map(|kv| {
            let name = String::from_utf8_lossy(kv.value());
            (!name.is_empty()).then(|| Arc::from(&*name))
        }))
    }

    /// A put's options for `lifetime`: a key's TTL is the lease granted
    /// for its whole seconds (in `ttl_leases`), a lease is itself.
    pub(super) fn put_options(
        &self,
        lifetime: Lifetime,
        ttl_leases: &HashMap<i64, i64>,
    ) -> PutOptions {
        let options = PutOptions::new().with_prev_key();
        match lifetime {
            Lifetime::Forever => options,
            Lifetime::Ttl(ttl) => match ttl_leases.get(&lease_seconds(ttl)) {
                Some(lease) => options.with_lease(*lease),
                None => options,
            },
            Lifetime::Lease(lease) => options.with_lease(etcd_id(lease)),
        }
    }

    /// One lease per distinct TTL among the puts' `ttls`, granted before
    /// the transaction (a lease cannot be made inside one), by whole
    /// seconds. etcd may raise a TTL to its minimum (about 2 s). A lease
    /// whose transaction fails is left to expire with no key on it.
    pub(super) async fn grant_leases(
        &self,
        ttls: Vec<Duration>,
    ) -> Result<HashMap<i64, i64>, StorageError> {
        let mut leases = HashMap::new();
        for ttl in ttls {
            let seconds = lease_seconds(ttl);
            if leases.contains_key(&seconds) {
                continue;
            }
            let granted = loop {
                let id = random_id(true)?;
                let granted = self
                    .call(|| {
                        let mut lease = self.inner.client.lease_client();
                        let options = LeaseGrantOptions::new().with_id(id);
                        async move { lease.grant(seconds, Some(options)).await }
                    })
                    .await;
                match granted {
                    Ok(granted) => break granted.id(),
                    Err(Failure::LeaseExists) => continue,
                    Err(failure) => return Err(failure.storage()),
                }
            };
            leases.insert(seconds, granted);
        }
        Ok(leases)
    }

    pub async fn grant(
        &self,
        id: Option<LeaseId>,
        ttl: u64,
        owner: Option<Arc<str>>,
    ) -> Result<LeaseState, LeaseError> {
        let seconds = i64::try_from(ttl).unwrap_or(i64::MAX);
        let granted = loop {
            let asked = match id {
                Some(id) if for_a_ttl(id.get()) => return Err(LeaseError::Exists(id)),
                Some(id) => etcd_id(id),
                None => random_id(false)?,
            };
            let granted = self
                .call(|| {
                    let mut lease = self.inner.client.lease_client();
                    let options = LeaseGrantOptions::new().with_id(asked);
                    async move { lease.grant(seconds, Some(options)).await }
                })
                .await;
            match (granted, id) {
                (Ok(granted), _) => break granted,
                (Err(Failure::LeaseExists), Some(id)) => return Err(LeaseError::Exists(id)),
                (Err(Failure::LeaseExists), None) => continue,
                (Err(failure), _) => return Err(storage(failure)),
            }
        };
        let Some(id) = u64::try_from(granted.id()).ok().and_then(LeaseId::new) else {
            return Err(LeaseError::Storage(StorageError::Unavailable(
                "etcd granted a lease with an id that is not one".into(),
            )));
        };
        // Who holds it, on the lease: it goes when the lease goes.
        let holder = self.holder_key(id);
        let name = owner.as_deref().unwrap_or_default().to_owned();
        let held = self
            .call(|| {
                let mut kv = self.inner.client.kv_client();
                let (holder, name) = (holder.clone(), name.clone());
                let options = PutOptions::new().with_lease(granted.id());
                async move { kv.put(holder, name, Some(options)).await }
            })
            .await;
        if let Err(failure) = held {
            // Not handed out: it must not outlive this call.
            let _ = self.revoke(id).await;
            return Err(storage(failure));
        }
        let ttl = u64::try_from(granted.ttl()).unwrap_or(ttl);
        Ok(LeaseState {
            id,
            granted_ttl: ttl,
            ttl,
            owner,
            keys: None,
        })
    }

    pub async fn keep_alive(&self, id: LeaseId) -> Result<u64, LeaseError> {
        if self.holder(id).await?.is_none() {
            return Err(LeaseError::NotFound(id));
        }
        let answer = self
            .call(|| {
                let mut lease = self.inner.client.lease_client();
                async move {
                    let (mut keeper, mut answers) = lease.keep_alive(etcd_id(id)).await?;
                    keeper.keep_alive().await?;
                    answers.message().await
                }
            })
            .await
            .map_err(on_lease(id))?;
        // etcd answers a TTL of 0 for a lease it does not have.
        match answer.map(|answer| answer.ttl()) {
            Some(ttl) if ttl > 0 => Ok(u64::try_from(ttl).unwrap_or(0)),
            _ => Err(LeaseError::NotFound(id)),
        }
    }

    /// When the TTL leases of `kvs` run out, one etcd call per lease (keys
    /// written together with one TTL share one), at most `TTL_READS` at a
    /// time: a listing shows each key's TTL as the memory store's does. A
    /// lease etcd no longer has is one about to take its keys: it shows the
    /// least TTL, never none (which would read as a key that never expires).
    pub(super) async fn ttl_deadlines(
        &self,
        kvs: &[&KeyValue],
    ) -> Result<HashMap<i64, Instant>, Failure> {
        let ids: HashSet<i64> = kvs
            .iter()
            .map(|kv| kv.lease())
            .filter(|id| u64::try_from(*id).is_ok_and(for_a_ttl))
            .collect();
        futures_util::stream::iter(ids)
            .map(|id| async move {
                let answer = self
                    .call(|| {
                        let mut lease = self.inner.client.lease_client();
                        async move { lease.time_to_live(id, None).await }
                    })
                    .await?;
                let left = u64::try_from(answer.ttl()).unwrap_or(0);
                Ok((id, Instant::now() + Duration::from_secs(left)))
            })
            .buffer_unordered(TTL_READS)
            .try_collect()
            .await
    }

    pub async fn lease(&self, id: LeaseId, keys: bool) -> Result<LeaseState, LeaseError> {
        let Some(owner) = self.holder(id).await? else {
            return Err(LeaseError::NotFound(id));
        };
        let options = keys.then(|| LeaseTimeToLiveOptions::new().with_keys());
        let answer = self
            .call(|| {
                let mut lease = self.inner.client.lease_client();
                let options = options.clone();
                async move { lease.time_to_live(etcd_id(id), options).await }
            })
            .await
            .map_err(on_lease(id))?;
        // -1: etcd has no such lease (any more).
        let ttl = u64::try_from(answer.ttl()).map_err(|_| LeaseError::NotFound(id))?;
        let namespace = &self.inner.namespace;
        let keys = keys.then(|| {
            let mut keys: Vec<_> = answer
                .keys()
                .iter()
                .filter(|key| key.starts_with(namespace) && key.get(namespace.len()) != Some(&0xff))
                .map(|key| self.short(key).into())
                .collect();
            keys.sort_unstable();
            keys
        });
        Ok(LeaseState {
            id,
            granted_ttl: u64::try_from(answer.granted_ttl()).unwrap_or(0),
            ttl,
            owner,
            keys,
        })
    }

    pub async fn leases(
        &self,
        after: Option<LeaseId>,
        limit: usize,
    ) -> Result<LeasePage, LeaseError> {
        let prefix = self.beside(b"leases/");
        let start = match after {
            // Just after its key: the same key with a zero byte appended.
            Some(after) => {
                let mut start = self.holder_key(after);
                start.push(0);
                start
            }
            None => prefix.clone(),
        };
        let end = super::range::prefix_end(&prefix);
        let options = GetOptions::new()
            .with_range(end)
            .with_limit(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX));
        let answer = self.read(start, Some(options)).await.map_err(storage)?;
        let mut leases: Vec<LeaseHeld> = answer
            .kvs()
            .iter()
            .filter_map(|kv| {
                let hex = std::str::from_utf8(kv.key().strip_prefix(&prefix[..])?).ok()?;
                let owner = String::from_utf8_lossy(kv.value());
                Some(LeaseHeld {
                    id: LeaseId::parse(hex)?,
                    owner: (!owner.is_empty()).then(|| Arc::from(&*owner)),
                })
            })
            .collect();
        let more = leases.len() > limit || answer.more();
        leases.truncate(limit);
        Ok(LeasePage { leases, more })
    }

    pub async fn revoke(&self, id: LeaseId) -> Result<u64, LeaseError> {
        if self.holder(id).await?.is_none() {
            return Err(LeaseError::NotFound(id));
        }
        let answer = self
            .call(|| {
                let mut lease = self.inner.client.lease_client();
                async move { lease.revoke(etcd_id(id)).await }
            })
            .await
            .map_err(on_lease(id))?;
        Ok(answer
            .header()
            .map_or(0, |header| revision(header.revision())))
    }
}
