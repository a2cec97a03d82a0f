//! From a stored send request to provider payloads: parsed once per operation (cached), rendered
//! once per operation and provider kind — or per recipient when the request is templated.

use std::collections::HashMap;
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

/// Parsed operations by id, shared by the dispatchers (bounded: cleared when it grows large).
#[derive(Default)]
pub(crate) struct OperationCache {
    map: Mutex<HashMap<String, Arc<OperationContext>>>,
}

const MAX_CACHED_OPERATIONS: usize = 10_000;

impl OperationCache {
    pub fn get(&self, id: &str) -> Option<Arc<OperationContext>> {
        self.map.lock().expect("cache lock").get(id).cloned()
    }

    pub fn insert(&self, id: String, context: Arc<OperationContext>) {
        let mut map = self.map.lock().expect("cache lock");
        if map.len() >= MAX_CACHED_OPERATIONS {
            map.clear();
        }
        map.insert(id, context);
    }
}
