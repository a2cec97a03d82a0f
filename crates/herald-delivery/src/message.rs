//! From a stored send request to provider payloads: parsed once per operation (cached), rendered
//! once per operation and provider kind — or per recipient when the request is templated.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use herald_core::send::{Priority, SendRequest, render};
use herald_core::time::now_ms;
use herald_providers::{ApnsPrepared, FcmLegacyPrepared, FcmPrepared, PushMessage};
use serde_json::{Map, Value};

/// A payload rendered for one kind of provider client.
#[derive(Debug, Clone)]
pub(crate) enum Prepared {
    Apns(Arc<ApnsPrepared>),
    Fcm(Arc<FcmPrepared>),
    FcmLegacy(Arc<FcmLegacyPrepared>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientKind {
    Apns,
    Fcm,
    FcmLegacy,
}

/// One operation's request and its payloads.
pub(crate) struct OperationContext {
    pub request: SendRequest,
    pub expires_at: i64,
    apns: OnceLock<Arc<ApnsPrepared>>,
    fcm: OnceLock<Arc<FcmPrepared>>,
    fcm_legacy: OnceLock<Arc<FcmLegacyPrepared>>,
}

impl OperationContext {
    pub fn new(request: SendRequest, expires_at: i64) -> Self {
        Self {
            request,
            expires_at,
            apns: OnceLock::new(),
            fcm: OnceLock::new(),
            fcm_legacy: OnceLock::new(),
        }
    }

    /// The payload for recipient `recipient_index` through a client of `kind`: shared by the
    /// whole operation unless the request is templated.
    pub fn prepared(&self, kind: ClientKind, recipient_index: i64) -> Prepared {
        if self.request.templated {
            let variables = usize::try_from(recipient_index)
                .ok()
                .and_then(|i| self.request.to.get(i))
                .map(|r| r.variables().clone())
                .unwrap_or_default();
            let message = message_for(&self.request, self.expires_at, Some(&variables));
            return prepare(kind, &message);
        }
        let message = || message_for(&self.request, self.expires_at, None);
        match kind {
            ClientKind::Apns => Prepared::Apns(
                self.apns
                    .get_or_init(|| Arc::new(ApnsPrepared::new(&message())))
                    .clone(),
            ),
            ClientKind::Fcm => Prepared::Fcm(
                self.fcm
                    .get_or_init(|| Arc::new(FcmPrepared::new(&message())))
                    .clone(),
            ),
            ClientKind::FcmLegacy => Prepared::FcmLegacy(
                self.fcm_legacy
                    .get_or_init(|| Arc::new(FcmLegacyPrepared::new(&message())))
                    .clone(),
            ),
        }
    }
}

fn prepare(kind: ClientKind, message: &PushMessage) -> Prepared {
    match kind {
        ClientKind::Apns => Prepared::Apns(Arc::new(ApnsPrepared::new(message))),
        ClientKind::Fcm => Prepared::Fcm(Arc::new(FcmPrepared::new(message))),
        ClientKind::FcmLegacy => Prepared::FcmLegacy(Arc::new(FcmLegacyPrepared::new(message))),
    }
}

/// The provider-neutral message of a request, rendered with `variables` when given.
pub(crate) fn message_for(
    request: &SendRequest,
    expires_at: i64,
    variables: Option<&Map<String, Value>>,
) -> PushMessage {
    let text = |template: &Option<String>| {
        template.as_ref().map(|t| match variables {
            Some(vars) => render(t, vars),
            None => render(t, &Map::new()),
        })
    };
    let content = &request.content;
    let remaining = ((expires_at - now_ms()).max(0) / 1000) as u32;
    PushMessage {
        id: uuid::Uuid::now_v7(),
        title: text(&content.title),
        body: text(&content.body),
        data: content.data.clone(),
        image: content.image.clone(),
        badge: content.badge,
        category: content.category.clone(),
        click_action: content.click_action.clone(),
        sound: request.sound.clone(),
        silent: request.silent,
        priority: match request.priority {
            Priority::High => herald_providers::Priority::High,
            Priority::Low => herald_providers::Priority::Low,
        },
        ttl_seconds: if request.ttl == 0 {
            0
        } else {
            remaining.min(request.ttl)
        },
        expires_at_unix: if request.ttl == 0 {
            Some(0)
        } else {
            Some(expires_at / 1000)
        },
        collapse_key: request.collapse_key.clone(),
        apn_override: request.apn.clone(),
        fcm_override: request.fcm.clone(),
    }
}

/// Parsed operations by id, shared by the dispatchers. Bounded by operations and by the
/// recipients their requests hold (a 10,000-recipient request is megabytes parsed): the oldest
/// entries go first, and a dispatcher that misses one reads and parses it again.
#[derive(Default)]
pub(crate) struct OperationCache {
    inner: Mutex<CacheEntries>,
}

#[derive(Default)]
struct CacheEntries {
    map: HashMap<String, Arc<OperationContext>>,
    /// Ids in insertion order (the oldest first).
    order: VecDeque<String>,
    /// The recipients of every cached request together.
    recipients: usize,
}

const MAX_CACHED_OPERATIONS: usize = 10_000;
/// Some 20–30 MB of parsed requests: the operations a node is sending at once fit many times
/// over (a planned operation is sent within seconds). Bounded by count alone, 10,000 cached
/// requests of 10,000 recipients each could have held gigabytes.
const MAX_CACHED_RECIPIENTS: usize = 200_000;

fn weight(context: &OperationContext) -> usize {
    context.request.to.len().max(1)
}

impl OperationCache {
    pub fn get(&self, id: &str) -> Option<Arc<OperationContext>> {
        self.inner.lock().expect("cache lock").map.get(id).cloned()
    }

    pub fn insert(&self, id: String, context: Arc<OperationContext>) {
        let mut cache = self.inner.lock().expect("cache lock");
        let cache = &mut *cache;
        cache.recipients += weight(&context);
        match cache.map.insert(id.clone(), context) {
            Some(replaced) => cache.recipients -= weight(&replaced),
            None => cache.order.push_back(id.clone()),
        }
        // The oldest go first; the one just inserted stays, however large.
        while cache.map.len() > 1
            && (cache.map.len() > MAX_CACHED_OPERATIONS || cache.recipients > MAX_CACHED_RECIPIENTS)
        {
            let Some(oldest) = cache.order.pop_front() else {
                break;
            };
            if oldest == id {
                cache.order.push_back(oldest);
                continue;
            }
            if let Some(evicted) = cache.map.remove(&oldest) {
                cache.recipients -= weight(&evicted);
            }
        }
    }

    #[cfg(test)]
    fn recipients(&self) -> usize {
        self.inner.lock().expect("cache lock").recipients
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parsed request with `n` recipients (past the API's 10,000 too: the cache must not
    /// rely on that limit).
    fn context(n: usize) -> Arc<OperationContext> {
        let body = serde_json::json!({
            "to": [{"token": format!("{:064x}", 7), "provider": "APN"}],
            "content": {"body": "hi"},
        });
        let mut request = herald_core::send::parse(&body, now_ms()).expect("valid request");
        request.to = vec![request.to[0].clone(); n];
        Arc::new(OperationContext::new(request, now_ms() + 60_000))
    }

    /// Large requests push the oldest entries out once their recipients pass the bound; the
    /// newest stays, even alone over the bound; replacing an entry counts it once.
    #[test]
    fn the_cache_is_bounded_by_recipients_oldest_first() {
        let cache = OperationCache::default();
        let big = context(MAX_CACHED_RECIPIENTS / 4);
        for i in 0..4 {
            cache.insert(format!("op{i}"), big.clone());
        }
        assert_eq!(cache.recipients(), MAX_CACHED_RECIPIENTS);
        assert!(cache.get("op0").is_some());
        cache.insert("op4".into(), big.clone());
        assert!(cache.get("op0").is_none(), "the oldest went");
        assert!(cache.get("op1").is_some() && cache.get("op4").is_some());
        assert_eq!(cache.recipients(), MAX_CACHED_RECIPIENTS);

        cache.insert("op4".into(), context(1));
        assert_eq!(cache.recipients(), 3 * (MAX_CACHED_RECIPIENTS / 4) + 1);

        let huge = context(MAX_CACHED_RECIPIENTS + 1);
        cache.insert("huge".into(), huge);
        assert!(cache.get("huge").is_some(), "the newest stays");
        assert!(cache.get("op1").is_none() && cache.get("op4").is_none());
        assert_eq!(cache.recipients(), MAX_CACHED_RECIPIENTS + 1);
    }

    /// Small requests are bounded by count.
    #[test]
    fn the_cache_is_bounded_by_operations() {
        let cache = OperationCache::default();
        let one = context(1);
        for i in 0..MAX_CACHED_OPERATIONS + 5 {
            cache.insert(format!("op{i}"), one.clone());
        }
        assert_eq!(cache.recipients(), MAX_CACHED_OPERATIONS);
        assert!(cache.get("op4").is_none());
        assert!(cache.get("op5").is_some());
    }
}
