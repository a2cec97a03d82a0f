//! Store conformance: Push credentials and apps (defaults, limits, delete rules, concurrency,
//! rotation, secrets at rest, what sending reads), on every backend.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use herald_core::credential_content::{
    CredentialFacts, CredentialSecret, PushCredentialType, ValidatedContent, validate_push_content,
};
use herald_core::{AppName, Tags};
use herald_store::apps::AppFilter;
use herald_store::credentials::{CredentialFilter, CredentialUpdate, NewCredential};
use herald_store::testing::TestDatabase;
use herald_store::{
    AccountStore, AppStore, CredentialStore, PageRequest, SqlStore, StoreError, StoreLimits,
};
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, Connection, Row};

use PushCredentialType::{Apn, ApnSandbox, Fcm};

fn testdata(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/credentials")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture(name: &str) -> serde_json::Value {
    serde_json::from_str(&testdata(name)).unwrap()
}

/// Validated content of a fixture (validated once per test binary: RSA parsing is not free).
fn content(kind: PushCredentialType) -> ValidatedContent {
    static APN_TOKEN: OnceLock<ValidatedContent> = OnceLock::new();
    static FCM: OnceLock<ValidatedContent> = OnceLock::new();
    match kind {
        Apn | ApnSandbox => APN_TOKEN
            .get_or_init(|| validate_push_content(Apn, &fixture("apn-token-content.json")).unwrap())
            .clone(),
        Fcm => FCM
            .get_or_init(|| validate_push_content(Fcm, &fixture("fcm-content.json")).unwrap())
            .clone(),
    }
}

fn cert_content() -> ValidatedContent {
    validate_push_content(Apn, &fixture("apn-cert-content-bundle-id.json")).unwrap()
}

fn app(name: &str) -> AppName {
    AppName::parse(name).unwrap()
}

fn new_credential(
    kind: PushCredentialType,
    app_name: &str,
    is_default: Option<bool>,
) -> NewCredential {
    NewCredential {
        credential_type: kind,
        app_name: app(app_name),
        is_default,
        tags: Tags::default(),
        content: content(kind),
    }
}

async fn account(store: &SqlStore) -> String {
    store.create_account(None).await.unwrap().account.sid
}

fn all_pages() -> PageRequest {
    PageRequest::first(1000)
}

/// Every credential of the account (newest first), as `(id, is_default)`.
async fn credentials_of(store: &SqlStore, account: &str) -> Vec<(String, bool)> {
    store
        .list_credentials(account, &CredentialFilter::default(), &all_pages())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| (c.id, c.is_default))
        .collect()
}

async fn app_names(store: &SqlStore, account: &str) -> Vec<(String, bool)> {
    store
        .list_apps(account, &AppFilter::default(), &all_pages())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| (a.name.as_str().to_owned(), a.is_default))
        .collect()
}

fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, field: &str, needle: &str) {
    match result {
        Err(StoreError::Invalid {
            field: Some(f),
            message,
        }) => {
            assert_eq!(f, field, "{message}");
            assert!(
                message.contains(needle),
                "{message:?} should mention {needle:?}"
            );
        }
        other => panic!("expected Invalid at {field}, got {other:?}"),
    }
}

#[tokio::test]
async fn first_credential_makes_the_app_and_defaults() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        assert_eq!(store.account_default_app(&acct).await.unwrap(), None);

        let first = store
            .create_credential(&acct, new_credential(Apn, "shop", None))
            .await
            .unwrap();
        assert!(first.id.starts_with("comms_credential_"), "{}", db.name);
        assert!(first.is_default, "first APN of the app is default");
        assert_eq!(first.app_name.as_str(), "shop");
        assert_eq!(first.content_version, 1);
        assert_eq!(first.last_error, None);
        match &first.facts {
            Some(CredentialFacts::Apn(facts)) => assert_eq!(facts.topic, "com.example.herald"),
            other => panic!("facts {other:?}"),
        }
        let shop = store.get_app(&acct, &app("shop")).await.unwrap();
        assert!(
            shop.is_default,
            "the account's first app is its default app"
        );
        assert_eq!(shop.default_credentials, vec![(Apn, first.id.clone())]);
        assert_eq!(
            store.account_default_app(&acct).await.unwrap(),
            Some(app("shop"))
        );

        // A second APN is not default unless asked; `isDefault: false` is just "not default".
        let second = store
            .create_credential(&acct, new_credential(Apn, "shop", Some(false)))
            .await
            .unwrap();
        assert!(!second.is_default);
        // Another type has its own default, even with `isDefault: false` (first of its type).
        let fcm = store
            .create_credential(&acct, new_credential(Fcm, "shop", Some(false)))
            .await
            .unwrap();
        assert!(fcm.is_default, "first FCM of the app is default regardless");
        let sandbox = store
            .create_credential(&acct, new_credential(ApnSandbox, "shop", None))
            .await
            .unwrap();
        assert!(sandbox.is_default);
        let defaults = vec![
            (Apn, first.id.clone()),
            (ApnSandbox, sandbox.id.clone()),
            (Fcm, fcm.id.clone()),
        ];
        assert_eq!(
            store
                .app_default_credentials(&acct, &app("shop"))
                .await
                .unwrap(),
            defaults,
            "{}: order APN, APN_SANDBOX, FCM",
            db.name
        );
        assert_eq!(
            store
                .get_app(&acct, &app("shop"))
                .await
                .unwrap()
                .default_credentials,
            defaults,
            "{}: the app reads its defaults the same way",
            db.name
        );

        // `isDefault: true` moves the default of its type only.
        let third = store
            .create_credential(&acct, new_credential(Apn, "shop", Some(true)))
            .await
            .unwrap();
        assert!(third.is_default);
        assert!(
            !store
                .get_credential(&acct, &first.id)
                .await
                .unwrap()
                .is_default
        );
        assert!(
            store
                .get_credential(&acct, &fcm.id)
                .await
                .unwrap()
                .is_default
        );
        assert_eq!(
            store
                .app_default_credentials(&acct, &app("shop"))
                .await
                .unwrap()[0],
            (Apn, third.id.clone())
        );

        // A second app is not the default app; its first credential is its own default.
        let other = store
            .create_credential(&acct, new_credential(Apn, "games", None))
            .await
            .unwrap();
        assert!(other.is_default);
        assert!(
            !store
                .get_app(&acct, &app("games"))
                .await
                .unwrap()
                .is_default
        );
        assert_eq!(
            app_names(&store, &acct).await,
            vec![("games".into(), false), ("shop".into(), true)]
        );
        assert_eq!(
            store
                .app_default_credentials(&acct, &app("nope"))
                .await
                .unwrap(),
            vec![]
        );

        // Unknown account: nothing is made.
        let missing = store
            .create_credential(
                "AC00000000000000000000000000000000",
                new_credential(Apn, "x", None),
            )
            .await;
        assert!(matches!(missing, Err(StoreError::NotFound)), "{}", db.name);
    }
}

#[tokio::test]
async fn limits_are_enforced_and_name_the_limit() {
    for db in TestDatabase::all().await {
        let store = db
            .store_with_limits(StoreLimits {
                max_apps_per_account: 2,
                max_credentials_per_app: 3,
            })
            .await;
        let acct = account(&store).await;
        for _ in 0..3 {
            store
                .create_credential(&acct, new_credential(Fcm, "one", None))
                .await
                .unwrap();
        }
        let before = credentials_of(&store, &acct).await;
        assert_invalid(
            store
                .create_credential(&acct, new_credential(Apn, "one", Some(true)))
                .await,
            "appName",
            "limit of 3 credentials per app",
        );
        assert_eq!(credentials_of(&store, &acct).await, before, "{}", db.name);

        store
            .create_credential(&acct, new_credential(Fcm, "two", None))
            .await
            .unwrap();
        let before = credentials_of(&store, &acct).await;
        assert_invalid(
            store
                .create_credential(&acct, new_credential(Fcm, "three", None))
                .await,
            "appName",
            "limit of 2 apps per account",
        );
        assert_eq!(credentials_of(&store, &acct).await, before);
        assert_eq!(app_names(&store, &acct).await.len(), 2, "no app made");

        // The limits are per account and per app.
        let other = account(&store).await;
        store
            .create_credential(&other, new_credential(Fcm, "three", None))
            .await
            .unwrap();
        store
            .create_credential(&acct, new_credential(Fcm, "two", None))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn default_limits_are_the_references() {
    let db = TestDatabase::sqlite().await;
    let store = db.store().await;
    let acct = account(&store).await;
    for i in 0..10 {
        store
            .create_credential(&acct, new_credential(Fcm, "full", None))
            .await
            .unwrap_or_else(|e| panic!("credential {i}: {e}"));
    }
    assert_invalid(
        store
            .create_credential(&acct, new_credential(Fcm, "full", None))
            .await,
        "appName",
        "limit of 10 credentials per app",
    );
    for i in 1..10 {
        store
            .create_credential(&acct, new_credential(Fcm, &format!("app_{i}"), None))
            .await
            .unwrap();
    }
    assert_invalid(
        store
            .create_credential(&acct, new_credential(Fcm, "app_10", None))
            .await,
        "appName",
        "limit of 10 apps per account",
    );
}

#[tokio::test]
async fn updates_move_defaults_replace_tags_and_rotate_keys() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        let mut first = new_credential(Apn, "shop", None);
        first.tags = Tags::from_json(&serde_json::json!({"env": "prod", "team": "a"})).unwrap();
        let first = store.create_credential(&acct, first).await.unwrap();
        let second = store
            .create_credential(&acct, new_credential(Apn, "shop", None))
            .await
            .unwrap();

        // `isDefault: false` on the default is refused and changes nothing.
        let refused = store
            .update_credential(
                &acct,
                &first.id,
                CredentialUpdate {
                    is_default: Some(false),
                    tags: Some(Tags::default()),
                    content: Some(cert_content()),
                },
            )
            .await;
        assert_invalid(refused, "isDefault", "make another credential the default");
        assert_eq!(store.get_credential(&acct, &first.id).await.unwrap(), first);

        // `isDefault: false` on a non-default one is a no-op.
        let same = store
            .update_credential(
                &acct,
                &second.id,
                CredentialUpdate {
                    is_default: Some(false),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(!same.is_default);

        // `isDefault: true` moves the default.
        let moved = store
            .update_credential(
                &acct,
                &second.id,
                CredentialUpdate {
                    is_default: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(moved.is_default);
        assert!(
            !store
                .get_credential(&acct, &first.id)
                .await
                .unwrap()
                .is_default
        );
        assert_eq!(
            store
                .app_default_credentials(&acct, &app("shop"))
                .await
                .unwrap(),
            vec![(Apn, second.id.clone())],
            "{}",
            db.name
        );

        // Tags replace the whole map.
        let tagged = store
            .update_credential(
                &acct,
                &first.id,
                CredentialUpdate {
                    tags: Some(Tags::from_json(&serde_json::json!({"env": "dev"})).unwrap()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let expected: BTreeMap<String, String> = [("env".to_owned(), "dev".to_owned())].into();
        assert_eq!(tagged.tags.as_map(), &expected);
        assert_eq!(tagged.content_version, 1);

        // Rotation: new secret and facts, version + 1, last error cleared; nothing else moves.
        assert!(
            store
                .set_credential_last_error(&first.id, 1, "BadCertificate", "bad")
                .await
                .unwrap()
        );
        let rotated = store
            .update_credential(
                &acct,
                &first.id,
                CredentialUpdate {
                    content: Some(cert_content()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(rotated.content_version, 2);
        assert_eq!(rotated.last_error, None);
        assert_eq!(rotated.tags, tagged.tags);
        assert!(!rotated.is_default);
        match &rotated.facts {
            Some(CredentialFacts::Apn(facts)) => {
                assert_eq!(facts.topic, "com.example.herald.voip")
            }
            other => panic!("facts {other:?}"),
        }
        let (record, secret, version) =
            store.get_credential_secret(&acct, &first.id).await.unwrap();
        assert_eq!(version, 2);
        assert_eq!(record, rotated);
        assert!(matches!(secret, CredentialSecret::ApnCertificate { .. }));
        assert_eq!(secret, cert_content().secret);

        // An empty update changes nothing.
        let unchanged = store
            .update_credential(&acct, &first.id, CredentialUpdate::default())
            .await
            .unwrap();
        assert_eq!(unchanged, rotated);
    }
}

#[tokio::test]
async fn deletes_promote_defaults_and_remove_empty_apps() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        let a1 = store
            .create_credential(&acct, new_credential(Apn, "shop", None))
            .await
            .unwrap();
        let a2 = store
            .create_credential(&acct, new_credential(Apn, "shop", None))
            .await
            .unwrap();
        let a3 = store
            .create_credential(&acct, new_credential(Apn, "shop", None))
            .await
            .unwrap();
        let f1 = store
            .create_credential(&acct, new_credential(Fcm, "shop", None))
            .await
            .unwrap();
        let games = store
            .create_credential(&acct, new_credential(Fcm, "games", None))
            .await
            .unwrap();
        let news = store
            .create_credential(&acct, new_credential(Fcm, "news", None))
            .await
            .unwrap();

        // Deleting a non-default one promotes nothing.
        let deletion = store.delete_credential(&acct, &a2.id).await.unwrap();
        assert_eq!(deletion, Default::default(), "{}", db.name);
        assert!(
            store
                .get_credential(&acct, &a1.id)
                .await
                .unwrap()
                .is_default
        );

        // Deleting the default promotes the most recent remaining one of its type.
        store
            .create_credential(&acct, new_credential(Fcm, "shop", None))
            .await
            .unwrap();
        let deletion = store.delete_credential(&acct, &a1.id).await.unwrap();
        assert_eq!(
            deletion.promoted_credential.as_deref(),
            Some(a3.id.as_str())
        );
        assert!(!deletion.app_deleted);
        assert!(
            store
                .get_credential(&acct, &a3.id)
                .await
                .unwrap()
                .is_default
        );
        assert!(
            store
                .get_credential(&acct, &f1.id)
                .await
                .unwrap()
                .is_default
        );
        assert!(matches!(
            store.get_credential(&acct, &a1.id).await,
            Err(StoreError::NotFound)
        ));
        // The last of its type: no default of that type any more, the app stays.
        let deletion = store.delete_credential(&acct, &a3.id).await.unwrap();
        assert_eq!(deletion.promoted_credential, None);
        assert!(!deletion.app_deleted);
        let defaults = store
            .app_default_credentials(&acct, &app("shop"))
            .await
            .unwrap();
        assert_eq!(defaults, vec![(Fcm, f1.id.clone())]);

        // A non-default app's last credential: the app goes, the default app stays.
        let deletion = store.delete_credential(&acct, &games.id).await.unwrap();
        assert!(deletion.app_deleted);
        assert_eq!(deletion.promoted_app, None);
        assert!(matches!(
            store.get_app(&acct, &app("games")).await,
            Err(StoreError::NotFound)
        ));

        // The default app's last credential: the most recent remaining app becomes default.
        let old = store
            .create_credential(&acct, new_credential(Fcm, "old", None))
            .await
            .unwrap();
        for (id, _) in credentials_of(&store, &acct)
            .await
            .into_iter()
            .filter(|(id, _)| *id != news.id && *id != old.id)
        {
            store.delete_credential(&acct, &id).await.unwrap();
        }
        assert_eq!(
            app_names(&store, &acct).await,
            vec![("old".into(), true), ("news".into(), false)],
            "{}: shop was deleted and the newest remaining app (old) is the default",
            db.name
        );
        assert_eq!(
            store.account_default_app(&acct).await.unwrap(),
            Some(app("old"))
        );
        store.delete_credential(&acct, &old.id).await.unwrap();
        assert_eq!(
            store.account_default_app(&acct).await.unwrap(),
            Some(app("news"))
        );
        let deletion = store.delete_credential(&acct, &news.id).await.unwrap();
        assert!(deletion.app_deleted);
        assert_eq!(deletion.promoted_app, None);
        assert_eq!(store.account_default_app(&acct).await.unwrap(), None);
        assert!(app_names(&store, &acct).await.is_empty());

        // A fresh start: the next app is the default app again.
        store
            .create_credential(&acct, new_credential(Fcm, "again", None))
            .await
            .unwrap();
        assert_eq!(
            store.account_default_app(&acct).await.unwrap(),
            Some(app("again"))
        );

        // Deleting twice is NotFound.
        assert!(matches!(
            store.delete_credential(&acct, &news.id).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn app_default_moves_and_is_never_lost() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        for name in ["first", "second", "third"] {
            store
                .create_credential(&acct, new_credential(Fcm, name, None))
                .await
                .unwrap();
        }
        assert_invalid(
            store.set_app_default(&acct, &app("first"), false).await,
            "isDefault",
            "make another app the default",
        );
        let unchanged = store
            .set_app_default(&acct, &app("second"), false)
            .await
            .unwrap();
        assert!(!unchanged.is_default);
        let moved = store
            .set_app_default(&acct, &app("second"), true)
            .await
            .unwrap();
        assert!(moved.is_default);
        assert!(moved.updated_at >= moved.created_at);
        assert_eq!(
            app_names(&store, &acct).await,
            vec![
                ("third".into(), false),
                ("second".into(), true),
                ("first".into(), false)
            ],
            "{}",
            db.name
        );
        assert_eq!(
            store.account_default_app(&acct).await.unwrap(),
            Some(app("second"))
        );
        // Idempotent.
        assert!(
            store
                .set_app_default(&acct, &app("second"), true)
                .await
                .unwrap()
                .is_default
        );
        assert!(matches!(
            store.set_app_default(&acct, &app("nope"), true).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn tenancy_and_chat_rows_are_invisible() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        let other = account(&store).await;
        let mine = store
            .create_credential(&acct, new_credential(Fcm, "shop", None))
            .await
            .unwrap();
        assert!(matches!(
            store.get_credential(&other, &mine.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store
                .update_credential(
                    &other,
                    &mine.id,
                    CredentialUpdate {
                        tags: Some(Tags::default()),
                        ..Default::default()
                    }
                )
                .await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_credential(&other, &mine.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.get_credential_secret(&other, &mine.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.get_app(&other, &app("shop")).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.set_app_default(&other, &app("shop"), true).await,
            Err(StoreError::NotFound)
        ));
        assert!(credentials_of(&store, &other).await.is_empty());
        assert!(app_names(&store, &other).await.is_empty());
        assert!(
            store
                .app_default_credentials(&other, &app("shop"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.account_default_app(&other).await.unwrap(), None);
        // The other account's app of the same name is its own.
        store
            .create_credential(&other, new_credential(Fcm, "shop", None))
            .await
            .unwrap();
        assert!(
            store
                .get_credential(&acct, &mine.id)
                .await
                .unwrap()
                .is_default
        );

        // A Chat-face row of the same account is not a Push credential.
        let mut conn = raw_connection(&db).await;
        sqlx::query(
            "INSERT INTO credentials (id, account_sid, face, credential_type, created_at, updated_at) \
             VALUES ($1, $2, 'chat', 'apn', 1, 1)",
        )
        .bind("CR0123456789abcdef0123456789abcdef")
        .bind(&acct)
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        assert_eq!(credentials_of(&store, &acct).await.len(), 1, "{}", db.name);
        assert!(matches!(
            store
                .get_credential(&acct, "CR0123456789abcdef0123456789abcdef")
                .await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store
                .delete_credential(&acct, "CR0123456789abcdef0123456789abcdef")
                .await,
            Err(StoreError::NotFound)
        ));
        // ...but the delivery engine can record errors against it.
        assert!(
            store
                .set_credential_last_error("CR0123456789abcdef0123456789abcdef", 1, "x", "y")
                .await
                .unwrap()
        );
    }
}

#[tokio::test]
async fn lists_filter_and_page_newest_first() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        let mut made = Vec::new();
        for i in 0..7 {
            let (kind, app_name) = match i % 3 {
                0 => (Apn, "shop"),
                1 => (Fcm, "shop"),
                _ => (Fcm, "games"),
            };
            made.push(
                store
                    .create_credential(&acct, new_credential(kind, app_name, None))
                    .await
                    .unwrap(),
            );
        }
        let newest_first: Vec<String> = made.iter().rev().map(|c| c.id.clone()).collect();

        // Pages of 3: every credential once, in order.
        let mut seen = Vec::new();
        let mut page = PageRequest::first(3);
        loop {
            let got = store
                .list_credentials(&acct, &CredentialFilter::default(), &page)
                .await
                .unwrap();
            assert!(got.items.len() <= 3);
            seen.extend(got.items.iter().map(|c| c.id.clone()));
            match got.next {
                Some(cursor) => page.after = Some(cursor),
                None => break,
            }
        }
        assert_eq!(seen, newest_first, "{}", db.name);

        let ids = |items: Vec<herald_store::credentials::CredentialRecord>| -> Vec<String> {
            items.into_iter().map(|c| c.id).collect()
        };
        let filtered = |f: CredentialFilter| {
            let store = store.clone();
            let acct = acct.clone();
            async move {
                store
                    .list_credentials(&acct, &f, &all_pages())
                    .await
                    .unwrap()
                    .items
            }
        };
        let games = filtered(CredentialFilter {
            app_name: Some(app("games")),
            ..Default::default()
        })
        .await;
        assert_eq!(ids(games), vec![made[5].id.clone(), made[2].id.clone()]);
        let apn = filtered(CredentialFilter {
            credential_type: Some(Apn),
            ..Default::default()
        })
        .await;
        assert_eq!(
            ids(apn),
            vec![made[6].id.clone(), made[3].id.clone(), made[0].id.clone()]
        );
        let defaults = filtered(CredentialFilter {
            is_default: Some(true),
            ..Default::default()
        })
        .await;
        assert_eq!(
            ids(defaults),
            vec![made[2].id.clone(), made[1].id.clone(), made[0].id.clone()]
        );
        let fcm_shop_not_default = filtered(CredentialFilter {
            app_name: Some(app("shop")),
            credential_type: Some(Fcm),
            is_default: Some(false),
            ..Default::default()
        })
        .await;
        assert_eq!(ids(fcm_shop_not_default), vec![made[4].id.clone()]);

        // Dates are inclusive bounds on created_at.
        let from = made[3].created_at;
        let until = made[5].created_at;
        let window = filtered(CredentialFilter {
            created_from: Some(from),
            created_until: Some(until),
            ..Default::default()
        })
        .await;
        let window_ids = ids(window);
        for c in &made {
            let inside = c.created_at >= from && c.created_at <= until;
            assert_eq!(window_ids.contains(&c.id), inside);
        }
        assert!(window_ids.contains(&made[3].id) && window_ids.contains(&made[5].id));

        // Apps page too, and filter.
        let mut names = Vec::new();
        let mut page = PageRequest::first(1);
        loop {
            let got = store
                .list_apps(&acct, &AppFilter::default(), &page)
                .await
                .unwrap();
            names.extend(got.items.iter().map(|a| a.name.as_str().to_owned()));
            match got.next {
                Some(cursor) => page.after = Some(cursor),
                None => break,
            }
        }
        assert_eq!(names, vec!["games", "shop"]);
        let not_default = store
            .list_apps(
                &acct,
                &AppFilter {
                    is_default: Some(false),
                    ..Default::default()
                },
                &all_pages(),
            )
            .await
            .unwrap();
        assert_eq!(not_default.items.len(), 1);
        assert_eq!(not_default.items[0].name.as_str(), "games");
        assert_eq!(
            not_default.items[0].default_credentials,
            vec![(Fcm, made[2].id.clone())]
        );
        let later = store
            .list_apps(
                &acct,
                &AppFilter {
                    created_from: Some(made[2].created_at),
                    ..Default::default()
                },
                &all_pages(),
            )
            .await
            .unwrap();
        assert_eq!(later.items.len(), 1);
        let earlier = store
            .list_apps(
                &acct,
                &AppFilter {
                    created_until: Some(made[0].created_at),
                    ..Default::default()
                },
                &all_pages(),
            )
            .await
            .unwrap();
        assert_eq!(earlier.items.len(), 1);
        assert_eq!(earlier.items[0].name.as_str(), "shop");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_keep_one_default_and_the_limits() {
    for db in TestDatabase::all().await {
        let store = db
            .store_with_limits(StoreLimits {
                max_apps_per_account: 4,
                max_credentials_per_app: 6,
            })
            .await;
        let acct = account(&store).await;

        // Many creates in one new app at once, each asking to be the default.
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let store = store.clone();
                let acct = acct.clone();
                tokio::spawn(async move {
                    let kind = if i % 2 == 0 { Apn } else { Fcm };
                    store
                        .create_credential(&acct, new_credential(kind, "race", Some(i % 3 == 0)))
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(StoreError::Invalid { field, .. }) => {
                    assert_eq!(field.as_deref(), Some("appName"))
                }
                Err(other) => panic!("{}: {other}", db.name),
            }
        }
        assert_eq!(ok, 6, "{}: exactly the limit got in", db.name);
        let all = store
            .list_credentials(&acct, &CredentialFilter::default(), &all_pages())
            .await
            .unwrap()
            .items;
        assert_eq!(all.len(), 6);
        for kind in [Apn, Fcm] {
            let of_kind: Vec<_> = all.iter().filter(|c| c.credential_type == kind).collect();
            if !of_kind.is_empty() {
                assert_eq!(
                    of_kind.iter().filter(|c| c.is_default).count(),
                    1,
                    "{}: one default {kind}",
                    db.name
                );
            }
        }

        // Many new apps at once: exactly the app limit, exactly one default app.
        let tasks: Vec<_> = (0..10)
            .map(|i| {
                let store = store.clone();
                let acct = acct.clone();
                tokio::spawn(async move {
                    store
                        .create_credential(&acct, new_credential(Fcm, &format!("app_{i}"), None))
                        .await
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            if task.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 3, "{}: the app limit counts the existing app", db.name);
        let apps = app_names(&store, &acct).await;
        assert_eq!(apps.len(), 4);
        assert_eq!(apps.iter().filter(|(_, d)| *d).count(), 1);

        // A fresh account racing its very first apps: still exactly one default app.
        let fresh = account(&store).await;
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let store = store.clone();
                let fresh = fresh.clone();
                tokio::spawn(async move {
                    store
                        .create_credential(&fresh, new_credential(Apn, &format!("a{i}"), None))
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let apps = app_names(&store, &fresh).await;
        assert_eq!(apps.len(), 4);
        assert_eq!(apps.iter().filter(|(_, d)| *d).count(), 1, "{}", db.name);

        // Concurrent "make me the default" updates end with one default.
        let ids: Vec<String> = all
            .iter()
            .filter(|c| c.credential_type == Apn)
            .map(|c| c.id.clone())
            .collect();
        let tasks: Vec<_> = ids
            .iter()
            .map(|id| {
                let store = store.clone();
                let acct = acct.clone();
                let id = id.clone();
                tokio::spawn(async move {
                    store
                        .update_credential(
                            &acct,
                            &id,
                            CredentialUpdate {
                                is_default: Some(true),
                                ..Default::default()
                            },
                        )
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let defaults = store
            .list_credentials(
                &acct,
                &CredentialFilter {
                    credential_type: Some(Apn),
                    is_default: Some(true),
                    ..Default::default()
                },
                &all_pages(),
            )
            .await
            .unwrap();
        assert_eq!(defaults.items.len(), 1, "{}", db.name);
    }
}

#[tokio::test]
async fn last_error_is_recorded_per_content_version() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        let cred = store
            .create_credential(&acct, new_credential(Apn, "shop", None))
            .await
            .unwrap();
        assert!(
            store
                .set_credential_last_error(
                    &cred.id,
                    1,
                    "InvalidProviderToken",
                    "the key is revoked"
                )
                .await
                .unwrap()
        );
        let got = store.get_credential(&acct, &cred.id).await.unwrap();
        let error = got.last_error.expect("recorded");
        assert_eq!(error.code, "InvalidProviderToken");
        assert_eq!(error.message, "the key is revoked");
        assert!(error.at >= cred.created_at);
        assert_eq!(got.updated_at, cred.updated_at, "not a user change");

        store.clear_credential_last_error(&cred.id).await.unwrap();
        assert_eq!(
            store
                .get_credential(&acct, &cred.id)
                .await
                .unwrap()
                .last_error,
            None
        );

        // After a rotation an answer about the old key is not recorded.
        store
            .update_credential(
                &acct,
                &cred.id,
                CredentialUpdate {
                    content: Some(cert_content()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(
            !store
                .set_credential_last_error(&cred.id, 1, "BadCertificate", "old")
                .await
                .unwrap(),
            "{}",
            db.name
        );
        assert_eq!(
            store
                .get_credential(&acct, &cred.id)
                .await
                .unwrap()
                .last_error,
            None
        );
        assert!(
            store
                .set_credential_last_error(&cred.id, 2, "BadCertificate", "new")
                .await
                .unwrap()
        );
        assert!(
            !store
                .set_credential_last_error("comms_credential_nope", 1, "x", "y")
                .await
                .unwrap()
        );
    }
}

/// Byte strings that must not appear anywhere in the database: PEM armour and the key material
/// of the fixtures (PEM body lines, base64 of the files, raw DER windows, service-account values).
fn secret_needles() -> Vec<Vec<u8>> {
    let mut needles: Vec<Vec<u8>> = vec![
        b"-----BEGIN".to_vec(),
        b"PRIVATE KEY".to_vec(),
        b"private_key".to_vec(),
        b"BEGIN CERTIFICATE".to_vec(),
    ];
    for pem in ["apns-auth-key.p8", "apns-key.pem"] {
        let text = testdata(pem);
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        for line in text
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
        {
            needles.push(line.as_bytes().to_vec());
        }
        let der = STANDARD.decode(body).unwrap();
        // Raw key bytes, in windows of 16 from the middle (past the ASN.1 headers).
        for start in (der.len() / 3..der.len() - 16).step_by(16) {
            needles.push(der[start..start + 16].to_vec());
        }
    }
    let account: serde_json::Value =
        serde_json::from_str(&testdata("fcm-service-account.json")).unwrap();
    let key = account["private_key"].as_str().unwrap();
    for line in key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
    {
        needles.push(line.as_bytes().to_vec());
    }
    needles.push(
        account["private_key_id"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec(),
    );
    for name in [
        "apn-token-content.json",
        "fcm-content.json",
        "apn-cert-content.json",
    ] {
        let content = fixture(name);
        let key = content["privateKey"].as_str().unwrap();
        needles.push(key.as_bytes()[100..160].to_vec());
    }
    needles
}

fn find_needle(haystack: &[u8], needles: &[Vec<u8>]) -> Option<String> {
    needles
        .iter()
        .find(|n| haystack.windows(n.len()).any(|w| w == n.as_slice()))
        .map(|n| {
            format!(
                "{} bytes starting {:?}",
                n.len(),
                String::from_utf8_lossy(&n[..n.len().min(12)])
            )
        })
}

async fn raw_connection(db: &TestDatabase) -> AnyConnection {
    sqlx::any::install_default_drivers();
    AnyConnection::connect_with(&AnyConnectOptions::from_str(&db.url).unwrap())
        .await
        .unwrap()
}

async fn store_one_of_each(store: &SqlStore) -> (String, Vec<String>) {
    let acct = account(store).await;
    let mut ids = Vec::new();
    for (kind, content) in [
        (Apn, content(Apn)),
        (Fcm, content(Fcm)),
        (
            ApnSandbox,
            validate_push_content(ApnSandbox, &fixture("apn-cert-content.json")).unwrap(),
        ),
    ] {
        let record = store
            .create_credential(
                &acct,
                NewCredential {
                    credential_type: kind,
                    app_name: app("shop"),
                    is_default: None,
                    tags: Tags::default(),
                    content,
                },
            )
            .await
            .unwrap();
        ids.push(record.id);
    }
    // A rotation writes a new secret too.
    store
        .update_credential(
            &acct,
            &ids[0],
            CredentialUpdate {
                content: Some(cert_content()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    (acct, ids)
}

#[tokio::test]
async fn secrets_are_encrypted_in_the_sqlite_file() {
    let db = TestDatabase::sqlite().await;
    let store = db.store().await;
    let (acct, ids) = store_one_of_each(&store).await;
    // The secrets still open with the store's key.
    let (_, secret, _) = store.get_credential_secret(&acct, &ids[1]).await.unwrap();
    assert!(matches!(secret, CredentialSecret::FcmServiceAccount { .. }));
    store.close().await;

    let mut raw = Vec::new();
    for file in ["herald.db", "herald.db-wal"] {
        if let Ok(bytes) = std::fs::read(db.dir().join(file)) {
            raw.extend(bytes);
        }
    }
    // The needle search itself works: the IDs and the public topic are in the file.
    assert!(find_needle(&raw, &[ids[0].as_bytes().to_vec()]).is_some());
    assert!(find_needle(&raw, &[b"com.example.herald".to_vec()]).is_some());
    assert_eq!(find_needle(&raw, &secret_needles()), None);
}

#[tokio::test]
async fn secrets_are_encrypted_in_postgres() {
    let Some(db) = TestDatabase::postgres().await else {
        eprintln!("HERALD_TEST_DATABASE_URL not set: PostgreSQL part skipped");
        return;
    };
    let store = db.store().await;
    let (acct, ids) = store_one_of_each(&store).await;
    let mut conn = raw_connection(&db).await;
    let rows = sqlx::query("SELECT id, secret, facts, tags FROM credentials ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let needles = secret_needles();
    let mut seen = HashSet::new();
    for row in rows {
        let id: String = row.get(0);
        let secret: Vec<u8> = row.get(1);
        let facts: String = row.get(2);
        assert!(secret.len() > 100, "a sealed secret is stored");
        assert_eq!(
            find_needle(&secret, &needles),
            None,
            "secret column of {id}"
        );
        assert_eq!(
            find_needle(facts.as_bytes(), &needles),
            None,
            "facts of {id}"
        );
        seen.insert(id);
    }
    assert_eq!(seen, ids.iter().cloned().collect());
    conn.close().await.unwrap();
    let (_, secret, version) = store.get_credential_secret(&acct, &ids[0]).await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(secret, cert_content().secret);
}

#[tokio::test]
async fn a_wrong_master_key_cannot_open_secrets() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let (acct, ids) = store_one_of_each(&store).await;
        store.close().await;
        let wrong = SqlStore::connect(
            &db.url,
            &herald_store::MasterKey::generate(),
            StoreLimits::default(),
        )
        .await
        .unwrap();
        assert!(matches!(
            wrong.get_credential_secret(&acct, &ids[1]).await,
            Err(StoreError::Decrypt)
        ));
        // Metadata is still readable.
        assert!(
            wrong.get_credential(&acct, &ids[1]).await.is_ok(),
            "{}",
            db.name
        );
    }
}
