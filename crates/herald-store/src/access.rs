//! The tokens and tenants a node has looked up for API requests, kept
//! until any change that could alter what a token may do is known.
//!
//! Every API request presents a token and names a tenant; looking both up
//! was a round trip to the server per request on PostgreSQL, and on SQLite
//! the dearest read of a request (a reader's page cache starts over whenever
//! the database has changed, which under load is before every request). A
//! node keeps what it found, and forgets all of it once a change is known:
//!
//! - On PostgreSQL, the triggers of migration 0016 announce every change of
//!   a token (but for marking it used), a person and a tenant on the
//!   `herald_access` channel, from whichever node makes it, after its
//!   commit. The node that makes the change forgets at once too, without
//!   waiting for its own notification. Nothing is kept while the listening
//!   connection is down (a change could not be heard).
//! - On SQLite, the triggers of migration 0021 count the same changes in
//!   one row, whichever process makes them (`herald operator token revoke`
//!   runs beside the node on the same file). Each request reads that count,
//!   one row, and what was kept under another count is forgotten
//!   ([`AccessCache::observe`]).
//!
//! Nothing is kept for longer than [`MAX_AGE`] in any case, so that even a
//! connection that died without a word cannot hold a revoked token for
//! longer than that. A lookup that began before a change was known cannot
//! keep what it read ([`AccessCache::generation`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::{Tenant, TokenRecord};

/// The longest a looked-up token and tenant are used without reading them again.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(10);

/// The most pairs kept; past it, all are forgotten and kept afresh.
const MAX_ENTRIES: usize = 10_000;

/// The channel on which PostgreSQL announces changes of tokens, people and tenants.
pub(crate) const CHANNEL: &str = "herald_access";

/// What this node has looked up, by token hash and tenant slug.
#[derive(Default)]
pub(crate) struct AccessCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Counts the times everything was forgotten.
    generation: u64,
    /// Whether changes are heard: PostgreSQL's listening connection is up,
    /// or the store reads SQLite's count of changes.
    listening: bool,
    /// SQLite's count of changes when last read.
    seen: Option<i64>,
    entries: HashMap<String, Entry>,
}

impl State {
    /// Forgets every pair; a lookup begun before cannot keep what it read.
    fn forget(&mut self) {
        self.generation += 1;
        self.entries.clear();
    }
}

struct Entry {
    record: TokenRecord,
    tenant: Tenant,
    at: Instant,
}

/// The key of a token hash and a tenant slug (neither holds a newline).
fn key(hash: &str, slug: &str) -> String {
    format!("{hash}\n{slug}")
}

impl AccessCache {
    /// The token with hash `hash` and the tenant `slug`, if they were looked
    /// up less than [`MAX_AGE`] before `now` and nothing changed since.
    pub(crate) fn get(
        &self,
        hash: &str,
        slug: &str,
        now: Instant,
    ) -> Option<(TokenRecord, Tenant)> {
        let state = self.state.lock().expect("access cache lock");
        if !state.listening {
            return None;
        }
        state
            .entries
            .get(&key(hash, slug))
            .filter(|e| now.saturating_duration_since(e.at) < MAX_AGE)
            .map(|e| (e.record.clone(), e.tenant.clone()))
    }

    /// Taken before a lookup and given back to [`AccessCache::keep_found`]: `None`
    /// while changes cannot be heard, when nothing may be kept.
    pub(crate) fn generation(&self) -> Option<u64> {
        let state = self.state.lock().expect("access cache lock");
        state.listening.then_some(state.generation)
    }

    /// Keeps what a lookup read, looked up at `at`, unless anything was
    /// forgotten since `generation` was taken: the lookup may have read
    /// what a change has since replaced.
    fn keep(
        &self,
        generation: u64,
        hash: &str,
        slug: &str,
        record: TokenRecord,
        tenant: Tenant,
        at: Instant,
    ) {
        let mut state = self.state.lock().expect("access cache lock");
        if !state.listening || state.generation != generation {
            return;
        }
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.clear();
        }
        let entry = Entry { record, tenant, at };
        state.entries.insert(key(hash, slug), entry);
    }

    /// Keeps what a lookup found, begun at `generation` (`None`: changes
    /// could not be heard, nothing is kept), if it found both the token and
    /// the tenant: a token or tenant created a moment later must be found.
    /// What is kept was marked used (`marked`, when the lookup marked it);
    /// the lookup itself answers as the token was before.
    pub(crate) fn keep_found(
        &self,
        generation: Option<u64>,
        hash: &str,
        slug: &str,
        (record, tenant): (&TokenRecord, Option<&Tenant>),
        marked: Option<i64>,
        at: Instant,
    ) {
        if let (Some(generation), Some(tenant)) = (generation, tenant) {
            let used = TokenRecord {
                last_used_at: marked.or(record.last_used_at),
                ..record.clone()
            };
            self.keep(generation, hash, slug, used, tenant.clone(), at);
        }
    }

    /// Forgets everything: a change was announced or made here.
    pub(crate) fn forget(&self) {
        self.state.lock().expect("access cache lock").forget();
    }

    /// A cache for SQLite, which reads its count of changes with every
    /// lookup (see [`AccessCache::observe`]) and so always hears them.
    pub(crate) fn counted() -> AccessCache {
        let cache = AccessCache::default();
        cache.listening(true);
        cache
    }

    /// Notes SQLite's count of changes as a lookup read it: when it moved
    /// since the last one read, everything kept is forgotten. Read before
    /// the token and the tenant, so that what a lookup keeps is never older
    /// than the count it was read under.
    pub(crate) fn observe(&self, count: i64) {
        let mut state = self.state.lock().expect("access cache lock");
        if state.seen != Some(count) {
            state.seen = Some(count);
            state.forget();
        }
    }

    /// Notes whether the listening connection is up; either way, what was
    /// kept is forgotten (changes may have gone unheard meanwhile).
    pub(crate) fn listening(&self, up: bool) {
        let mut state = self.state.lock().expect("access cache lock");
        state.listening = up;
        state.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::{Role, TenantId, TenantSlug, TokenId};

    fn found() -> (TokenRecord, Tenant) {
        let tenant = Tenant {
            id: TenantId::new(),
            slug: TenantSlug::parse("acme").unwrap(),
            name: "Acme".into(),
            credential_storage: false,
            notification_provider_id: None,
            previous_provider_id: None,
            properties_effective_from: 0,
            created_at: 0,
        };
        let record = TokenRecord {
            id: TokenId::new(),
            tenant_id: Some(tenant.id),
            name: "app".into(),
            role: Role::Sender,
            person_id: None,
            created_at: 0,
            last_used_at: None,
            bootstrap: false,
        };
        (record, tenant)
    }

    /// Whether a lookup begun now, finishing at `at`, keeps what it found.
    fn kept(cache: &AccessCache, at: Instant) -> bool {
        kept_under(cache, cache.generation().expect("listening"), at)
    }

    /// Whether a lookup begun at `generation`, finishing at `at`, keeps what it found.
    fn kept_under(cache: &AccessCache, generation: u64, at: Instant) -> bool {
        let (record, tenant) = found();
        cache.keep(generation, "h", "acme", record, tenant, at);
        cache.get("h", "acme", at).is_some()
    }

    #[test]
    fn nothing_is_kept_while_changes_cannot_be_heard() {
        let cache = AccessCache::default();
        assert_eq!(cache.generation(), None);
        assert!(!kept_under(&cache, 0, Instant::now()));

        cache.listening(true);
        assert!(kept(&cache, Instant::now()));
        cache.listening(false);
        assert!(
            cache.get("h", "acme", Instant::now()).is_none(),
            "a lost connection forgets"
        );
    }

    #[test]
    fn a_change_forgets_and_a_lookup_from_before_it_is_not_kept() {
        let cache = AccessCache::counted();
        let now = Instant::now();
        assert!(kept(&cache, now));
        assert!(cache.get("h", "acme", now).is_some());
        assert!(cache.get("h", "other", now).is_none(), "by tenant too");

        cache.forget();
        assert!(cache.get("h", "acme", now).is_none());

        // Began before the next change, finished after it.
        let before = cache.generation().unwrap();
        cache.forget();
        assert!(!kept_under(&cache, before, now));
    }

    #[test]
    fn what_is_kept_is_read_again_after_its_maximum_age() {
        let cache = AccessCache::counted();
        let then = Instant::now();
        assert!(kept(&cache, then));
        assert!(cache.get("h", "acme", then + MAX_AGE / 2).is_some());
        assert!(cache.get("h", "acme", then + MAX_AGE).is_none());
    }

    #[test]
    fn a_moved_count_forgets_and_the_same_count_keeps() {
        let cache = AccessCache::counted();
        let now = Instant::now();
        cache.observe(7);
        assert!(kept(&cache, now));
        cache.observe(7);
        assert!(cache.get("h", "acme", now).is_some(), "the same count");

        // A lookup read count 7, another then read 8: the first keeps nothing.
        let before = cache.generation().unwrap();
        cache.observe(8);
        assert!(cache.get("h", "acme", now).is_none(), "the count moved");
        assert!(!kept_under(&cache, before, now));
        assert!(kept(&cache, now), "kept again under the new count");
    }
}
