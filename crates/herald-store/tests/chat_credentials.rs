//! Store conformance: Chat credentials (`face = 'chat'` rows of `credentials`), on every backend.

use std::str::FromStr;

use herald_core::credential_content::{CredentialFacts, CredentialSecret};
use herald_store::chat_credentials::{
    ChatCredentialInput, ChatCredentialType, ChatPagePosition, check_chat_input,
};
use herald_store::testing::TestDatabase;
use herald_store::{AccountStore, ChatCredentialStore, SqlStore, StoreError};
use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, Connection, Row};

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/credentials")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn apn(certificate: Option<&str>, private_key: Option<&str>) -> ChatCredentialInput {
    ChatCredentialInput {
        certificate: certificate.map(fixture),
        private_key: private_key.map(fixture),
        ..Default::default()
    }
}

fn named(name: &str) -> ChatCredentialInput {
    ChatCredentialInput {
        friendly_name: Some(name.to_owned()),
        ..Default::default()
    }
}

async fn account(store: &SqlStore) -> String {
    store.create_account(None).await.unwrap().account.sid
}

/// A raw connection to the test database, for checks below the store's API.
async fn raw(db: &TestDatabase) -> AnyConnection {
    let options = AnyConnectOptions::from_str(&db.url).unwrap();
    AnyConnection::connect_with(&options).await.unwrap()
}

/// Asserts `Invalid` naming `field`, with a message mentioning `needle`.
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, field: &str, needle: &str) {
    match result {
        Err(StoreError::Invalid {
            field: Some(f),
            message,
        }) => {
            assert_eq!(f, field, "{message}");
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected Invalid at {field}, got {other:?}"),
    }
}

async fn count(store: &SqlStore, account: &str) -> usize {
    store
        .list_chat_credentials(account, 1000, ChatPagePosition::First)
        .await
        .unwrap()
        .items
        .len()
}

#[tokio::test]
async fn create_get_and_list_round_trip() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        let input = ChatCredentialInput {
            friendly_name: Some("iOS prod".into()),
            sandbox: Some(true),
            ..apn(Some("apns-cert.pem"), Some("apns-key.pem"))
        };
        let created = store
            .create_chat_credential(&acct, ChatCredentialType::Apn, &input)
            .await
            .unwrap();
        assert!(
            herald_core::ids::is_sid("CR", &created.sid),
            "{}: {}",
            db.name,
            created.sid
        );
        assert_eq!(created.account_sid, acct);
        assert_eq!(created.credential_type, ChatCredentialType::Apn);
        assert_eq!(created.friendly_name.as_deref(), Some("iOS prod"));
        assert!(created.sandbox);
        assert_eq!(created.created_at, created.updated_at);
        match &created.facts {
            Some(CredentialFacts::Apn(facts)) => assert_eq!(facts.topic, "com.example.herald"),
            other => panic!("{other:?}"),
        }
        let fetched = store
            .get_chat_credential(&acct, &created.sid)
            .await
            .unwrap();
        assert_eq!(fetched, created, "{}", db.name);

        // A bare create (Twilio's example) is allowed: the content can come later.
        let bare = store
            .create_chat_credential(&acct, ChatCredentialType::Fcm, &Default::default())
            .await
            .unwrap();
        assert_eq!(bare.friendly_name, None);
        assert!(!bare.sandbox);
        assert_eq!(bare.facts, None);
        let page = store
            .list_chat_credentials(&acct, 50, ChatPagePosition::First)
            .await
            .unwrap();
        let sids: Vec<_> = page.items.iter().map(|c| c.sid.as_str()).collect();
        assert_eq!(
            sids,
            [bare.sid.as_str(), created.sid.as_str()],
            "newest first"
        );
        assert!(page.next.is_none() && page.previous.is_none());
    }
}

#[tokio::test]
async fn every_type_accepts_its_own_fields() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        let gcm = store
            .create_chat_credential(
                &acct,
                ChatCredentialType::Gcm,
                &ChatCredentialInput {
                    api_key: Some("AIzaSyExampleKey".into()),
                    sandbox: Some(false),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(gcm.credential_type, ChatCredentialType::Gcm);
        let account_json = fixture("fcm-service-account.json");
        let fcm = store
            .create_chat_credential(
                &acct,
                ChatCredentialType::Fcm,
                &ChatCredentialInput {
                    secret: Some(account_json),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        match &fcm.facts {
            Some(CredentialFacts::Fcm(facts)) => assert_eq!(facts.project_id, "herald-test"),
            other => panic!("{}: {other:?}", db.name),
        }
        // Twilio accepts expired certificates here (only parse and match are checked).
        store
            .create_chat_credential(
                &acct,
                ChatCredentialType::Apn,
                &apn(Some("apns-expired-cert.pem"), Some("apns-expired-key.pem")),
            )
            .await
            .unwrap();
        // Type parsing: the three names, any letter case; nothing else.
        assert_eq!("apn".parse(), Ok(ChatCredentialType::Apn));
        assert_eq!("GCM".parse(), Ok(ChatCredentialType::Gcm));
        assert_eq!("Fcm".parse(), Ok(ChatCredentialType::Fcm));
        assert!("apns".parse::<ChatCredentialType>().is_err());
        assert!("".parse::<ChatCredentialType>().is_err());
    }
}

#[tokio::test]
async fn invalid_input_is_refused_and_stores_nothing() {
    let cases: Vec<(ChatCredentialType, ChatCredentialInput, &str, &str)> = vec![
        (
            ChatCredentialType::Apn,
            named(&"x".repeat(65)),
            "FriendlyName",
            "at most 64",
        ),
        (
            ChatCredentialType::Apn,
            ChatCredentialInput {
                certificate: Some("not a certificate".into()),
                ..Default::default()
            },
            "Certificate",
            "Certificate",
        ),
        (
            ChatCredentialType::Apn,
            ChatCredentialInput {
                private_key: Some(
                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
                ),
                ..Default::default()
            },
            "PrivateKey",
            "PrivateKey",
        ),
        (
            ChatCredentialType::Apn,
            apn(Some("apns-cert.pem"), Some("other-rsa-key.pem")),
            "PrivateKey",
            "match",
        ),
        (
            ChatCredentialType::Apn,
            apn(None, Some("encrypted-key.pem")),
            "PrivateKey",
            "PrivateKey",
        ),
        (
            ChatCredentialType::Gcm,
            ChatCredentialInput {
                api_key: Some(" \n".into()),
                ..Default::default()
            },
            "ApiKey",
            "must not be empty",
        ),
        (
            ChatCredentialType::Fcm,
            ChatCredentialInput {
                secret: Some(String::new()),
                ..Default::default()
            },
            "Secret",
            "must not be empty",
        ),
        (
            ChatCredentialType::Fcm,
            ChatCredentialInput {
                secret: Some(r#"{"type": "service_account", "project_id": "p"}"#.into()),
                ..Default::default()
            },
            "Secret",
            "Secret",
        ),
        // Fields of another type.
        (
            ChatCredentialType::Gcm,
            apn(Some("apns-cert.pem"), None),
            "Certificate",
            "apn credentials only",
        ),
        (
            ChatCredentialType::Fcm,
            apn(None, Some("apns-key.pem")),
            "PrivateKey",
            "apn credentials only",
        ),
        (
            ChatCredentialType::Apn,
            ChatCredentialInput {
                api_key: Some("key".into()),
                ..Default::default()
            },
            "ApiKey",
            "gcm credentials only",
        ),
        (
            ChatCredentialType::Gcm,
            ChatCredentialInput {
                secret: Some("key".into()),
                ..Default::default()
            },
            "Secret",
            "fcm credentials only",
        ),
        (
            ChatCredentialType::Fcm,
            ChatCredentialInput {
                sandbox: Some(true),
                ..Default::default()
            },
            "Sandbox",
            "apn credentials only",
        ),
    ];
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        for (kind, input, field, needle) in &cases {
            assert!(!check_chat_input(*kind, input).is_empty(), "{input:?}");
            let result = store.create_chat_credential(&acct, *kind, input).await;
            assert_invalid(result, field, needle);
        }
        assert_eq!(count(&store, &acct).await, 0, "{}: nothing stored", db.name);

        // Every problem is reported, the first one's field named.
        let input = ChatCredentialInput {
            friendly_name: Some("y".repeat(70)),
            api_key: Some("k".into()),
            ..Default::default()
        };
        let problems = check_chat_input(ChatCredentialType::Apn, &input);
        assert_eq!(problems.len(), 2, "{problems:?}");
        let result = store
            .create_chat_credential(&acct, ChatCredentialType::Apn, &input)
            .await;
        assert_invalid(result, "FriendlyName", "ApiKey applies to gcm");

        // Limits are characters, not bytes; exactly 64 is fine.
        for name in ["é".repeat(64), "z".repeat(64)] {
            store
                .create_chat_credential(&acct, ChatCredentialType::Gcm, &named(&name))
                .await
                .unwrap();
        }
        // An unknown account stores nothing either.
        let missing = store
            .create_chat_credential(
                "AC00000000000000000000000000000000",
                ChatCredentialType::Gcm,
                &Default::default(),
            )
            .await;
        assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    }
}

#[tokio::test]
async fn updates_are_piecemeal_and_checked_against_stored_content() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        let created = store
            .create_chat_credential(&acct, ChatCredentialType::Apn, &named("first"))
            .await
            .unwrap();
        let incomplete = store.get_chat_credential_secret(&acct, &created.sid).await;
        assert_invalid(incomplete, "Certificate", "no Certificate yet");

        // The certificate first, alone.
        let updated = store
            .update_chat_credential(&acct, &created.sid, &apn(Some("apns-cert.pem"), None))
            .await
            .unwrap();
        assert_eq!(updated.friendly_name.as_deref(), Some("first"), "kept");
        assert!(updated.updated_at > created.updated_at);
        assert_eq!(updated.created_at, created.created_at);
        let incomplete = store.get_chat_credential_secret(&acct, &created.sid).await;
        assert_invalid(incomplete, "PrivateKey", "no PrivateKey yet");

        // A key that does not match the stored certificate is refused, and changes nothing.
        let wrong = store
            .update_chat_credential(
                &acct,
                &created.sid,
                &ChatCredentialInput {
                    friendly_name: Some("renamed".into()),
                    ..apn(None, Some("other-rsa-key.pem"))
                },
            )
            .await;
        assert_invalid(wrong, "PrivateKey", "stored Certificate");
        let unchanged = store
            .get_chat_credential(&acct, &created.sid)
            .await
            .unwrap();
        assert_eq!(unchanged, updated, "{}", db.name);

        // The matching key (PKCS#1 form) completes it.
        store
            .update_chat_credential(&acct, &created.sid, &apn(None, Some("apns-key-pkcs1.pem")))
            .await
            .unwrap();
        let send = store
            .get_chat_credential_secret(&acct, &created.sid)
            .await
            .unwrap();
        assert!(!send.sandbox);
        assert_eq!(send.topic.as_deref(), Some("com.example.herald"));
        let CredentialSecret::ApnCertificate { cert_pem, key_pem } = &send.secret else {
            panic!("{:?}", send.secret)
        };
        assert!(cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
            "normalized to PKCS#8"
        );
        let version = send.content_version;

        // A certificate that does not match the stored key is refused too.
        let wrong = store
            .update_chat_credential(&acct, &created.sid, &apn(Some("apns-ec-cert.pem"), None))
            .await;
        assert_invalid(wrong, "Certificate", "stored PrivateKey");

        // Both halves together replace both.
        store
            .update_chat_credential(
                &acct,
                &created.sid,
                &apn(Some("apns-ec-cert.pem"), Some("apns-ec-key-sec1.pem")),
            )
            .await
            .unwrap();
        let send = store
            .get_chat_credential_secret(&acct, &created.sid)
            .await
            .unwrap();
        assert!(
            send.content_version > version,
            "content change bumps the version"
        );
        let version = send.content_version;

        // Sandbox and the name; an empty name clears it. Sandbox changes the endpoint, so the
        // version moves; a rename does not.
        let renamed = store
            .update_chat_credential(&acct, &created.sid, &named("second"))
            .await
            .unwrap();
        assert_eq!(renamed.friendly_name.as_deref(), Some("second"));
        let send = store
            .get_chat_credential_secret(&acct, &created.sid)
            .await
            .unwrap();
        assert_eq!(send.content_version, version);
        let sandboxed = store
            .update_chat_credential(
                &acct,
                &created.sid,
                &ChatCredentialInput {
                    sandbox: Some(true),
                    friendly_name: Some(String::new()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(sandboxed.sandbox);
        assert_eq!(sandboxed.friendly_name, None);
        assert_eq!(
            store
                .get_chat_credential(&acct, &created.sid)
                .await
                .unwrap(),
            sandboxed
        );
        let send = store
            .get_chat_credential_secret(&acct, &created.sid)
            .await
            .unwrap();
        assert!(send.sandbox, "development endpoint");
        assert!(send.content_version > version);

        // Fields of another type are refused on update as on create.
        let wrong = store
            .update_chat_credential(
                &acct,
                &created.sid,
                &ChatCredentialInput {
                    secret: Some("key".into()),
                    ..Default::default()
                },
            )
            .await;
        assert_invalid(wrong, "Secret", "fcm credentials only");
        let wrong = store
            .update_chat_credential(&acct, &created.sid, &named(&"n".repeat(65)))
            .await;
        assert_invalid(wrong, "FriendlyName", "at most 64");
        assert_eq!(
            store
                .get_chat_credential(&acct, &created.sid)
                .await
                .unwrap(),
            sandboxed
        );
    }
}

#[tokio::test]
async fn sendable_secrets_by_type() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        let gcm = store
            .create_chat_credential(
                &acct,
                ChatCredentialType::Gcm,
                &ChatCredentialInput {
                    api_key: Some("  AIzaSyExampleKey\n".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let send = store
            .get_chat_credential_secret(&acct, &gcm.sid)
            .await
            .unwrap();
        assert_eq!(
            send.secret,
            CredentialSecret::FcmServerKey {
                key: "AIzaSyExampleKey".into()
            }
        );
        assert_eq!(send.credential_type, ChatCredentialType::Gcm);

        let fcm_key = store
            .create_chat_credential(
                &acct,
                ChatCredentialType::Fcm,
                &ChatCredentialInput {
                    secret: Some("AAAAexample:APA91bServerKey".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let send = store
            .get_chat_credential_secret(&acct, &fcm_key.sid)
            .await
            .unwrap();
        assert_eq!(
            send.secret,
            CredentialSecret::FcmServerKey {
                key: "AAAAexample:APA91bServerKey".into()
            }
        );

        let fcm_account = store
            .create_chat_credential(
                &acct,
                ChatCredentialType::Fcm,
                &ChatCredentialInput {
                    secret: Some(fixture("fcm-service-account.json")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let send = store
            .get_chat_credential_secret(&acct, &fcm_account.sid)
            .await
            .unwrap();
        let CredentialSecret::FcmServiceAccount { json } = &send.secret else {
            panic!("{:?}", send.secret)
        };
        let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(parsed["project_id"], "herald-test");
        assert!(!send.sandbox);

        // Switching an fcm Secret from a server key to a service account changes the facts.
        let switched = store
            .update_chat_credential(
                &acct,
                &fcm_key.sid,
                &ChatCredentialInput {
                    secret: Some(fixture("fcm-service-account.json")),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(matches!(switched.facts, Some(CredentialFacts::Fcm(_))));

        let empty_gcm = store
            .create_chat_credential(&acct, ChatCredentialType::Gcm, &Default::default())
            .await
            .unwrap();
        let missing = store
            .get_chat_credential_secret(&acct, &empty_gcm.sid)
            .await;
        assert_invalid(missing, "ApiKey", "no ApiKey yet");
        let empty_fcm = store
            .create_chat_credential(&acct, ChatCredentialType::Fcm, &Default::default())
            .await
            .unwrap();
        let missing = store
            .get_chat_credential_secret(&acct, &empty_fcm.sid)
            .await;
        assert_invalid(missing, "Secret", "no Secret yet");
    }
}

#[tokio::test]
async fn other_accounts_and_malformed_sids_are_not_found() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let owner = account(&store).await;
        let other = account(&store).await;
        let credential = store
            .create_chat_credential(
                &owner,
                ChatCredentialType::Gcm,
                &ChatCredentialInput {
                    api_key: Some("key".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let sid = credential.sid.as_str();
        let upper = format!("CR{}", sid[2..].to_uppercase());
        for (acct, sid) in [
            (other.as_str(), sid),
            (owner.as_str(), "CR123"),
            (owner.as_str(), upper.as_str()),
            (owner.as_str(), "CR00000000000000000000000000000000"),
            (
                owner.as_str(),
                "comms_credential_01h00000000000000000000000",
            ),
        ] {
            let name = db.name;
            assert!(
                matches!(
                    store.get_chat_credential(acct, sid).await,
                    Err(StoreError::NotFound)
                ),
                "{name} {sid}"
            );
            assert!(matches!(
                store
                    .update_chat_credential(acct, sid, &named("stolen"))
                    .await,
                Err(StoreError::NotFound)
            ));
            assert!(matches!(
                store.get_chat_credential_secret(acct, sid).await,
                Err(StoreError::NotFound)
            ));
            assert!(matches!(
                store.delete_chat_credential(acct, sid).await,
                Err(StoreError::NotFound)
            ));
        }
        assert_eq!(count(&store, &other).await, 0);
        assert_eq!(
            store.get_chat_credential(&owner, sid).await.unwrap(),
            credential,
            "untouched by the other account"
        );
        store.delete_chat_credential(&owner, sid).await.unwrap();
        assert!(matches!(
            store.get_chat_credential(&owner, sid).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_chat_credential(&owner, sid).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(count(&store, &owner).await, 0);
    }
}

#[tokio::test]
async fn pages_go_forward_and_back() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        let neighbour = account(&store).await;
        store
            .create_chat_credential(&neighbour, ChatCredentialType::Gcm, &named("other"))
            .await
            .unwrap();
        let mut sids = Vec::new();
        for i in 0..5 {
            let credential = store
                .create_chat_credential(&acct, ChatCredentialType::Gcm, &named(&format!("c{i}")))
                .await
                .unwrap();
            sids.push(credential.sid);
        }
        // Newest first by (created_at, sid): the expected order from one full read.
        let all = store
            .list_chat_credentials(&acct, 1000, ChatPagePosition::First)
            .await
            .unwrap();
        let order: Vec<String> = all.items.iter().map(|c| c.sid.clone()).collect();
        let mut sorted = order.clone();
        sorted.sort();
        let mut created = sids.clone();
        created.sort();
        assert_eq!(sorted, created, "{}: exactly this account's five", db.name);

        let page1 = store
            .list_chat_credentials(&acct, 2, ChatPagePosition::First)
            .await
            .unwrap();
        let ids = |page: &herald_store::chat_credentials::ChatCredentialPage| -> Vec<String> {
            page.items.iter().map(|c| c.sid.clone()).collect()
        };
        assert_eq!(ids(&page1), order[0..2]);
        assert!(page1.previous.is_none());
        let page2 = store
            .list_chat_credentials(
                &acct,
                2,
                ChatPagePosition::After(page1.next.clone().unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(ids(&page2), order[2..4]);
        let page3 = store
            .list_chat_credentials(
                &acct,
                2,
                ChatPagePosition::After(page2.next.clone().unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(ids(&page3), order[4..5]);
        assert!(page3.next.is_none());

        // Back from the last page.
        let back2 = store
            .list_chat_credentials(
                &acct,
                2,
                ChatPagePosition::Before(page3.previous.clone().unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(ids(&back2), order[2..4]);
        assert!(back2.next.is_some());
        let back1 = store
            .list_chat_credentials(
                &acct,
                2,
                ChatPagePosition::Before(back2.previous.clone().unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(ids(&back1), order[0..2]);
        assert!(
            back1.previous.is_none(),
            "nothing newer than the first page"
        );
        assert_eq!(back1.next, page1.next);

        // A credential made meanwhile does not shift the pages already read.
        store
            .create_chat_credential(&acct, ChatCredentialType::Gcm, &named("late"))
            .await
            .unwrap();
        let again = store
            .list_chat_credentials(
                &acct,
                2,
                ChatPagePosition::After(page1.next.clone().unwrap()),
            )
            .await
            .unwrap();
        assert_eq!(ids(&again), order[2..4]);
    }
}

#[tokio::test]
async fn chat_rows_are_separate_from_push_rows_and_sealed() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let acct = account(&store).await;
        let chat = store
            .create_chat_credential(
                &acct,
                ChatCredentialType::Apn,
                &apn(Some("apns-cert.pem"), Some("apns-key.pem")),
            )
            .await
            .unwrap();
        let gcm = store
            .create_chat_credential(
                &acct,
                ChatCredentialType::Gcm,
                &ChatCredentialInput {
                    api_key: Some("AIzaSyVerySecretServerKey".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();

        // A Push-face row of the same account, even one with a CR-shaped id, is invisible here.
        let push_id = "CR0123456789abcdef0123456789abcdef";
        let mut conn = raw(&db).await;
        sqlx::query(
            "INSERT INTO credentials (id, account_sid, face, credential_type, created_at, updated_at) \
             VALUES ($1, $2, 'push', 'APN', $3, $3)",
        )
        .bind(push_id)
        .bind(&acct)
        .bind(herald_core::time::now_ms())
        .execute(&mut conn)
        .await
        .unwrap();
        let listed = store
            .list_chat_credentials(&acct, 1000, ChatPagePosition::First)
            .await
            .unwrap();
        assert_eq!(listed.items.len(), 2, "{}", db.name);
        assert!(listed.items.iter().all(|c| c.sid != push_id));
        assert!(matches!(
            store.get_chat_credential(&acct, push_id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store
                .update_chat_credential(&acct, push_id, &named("x"))
                .await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.get_chat_credential_secret(&acct, push_id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.delete_chat_credential(&acct, push_id).await,
            Err(StoreError::NotFound)
        ));

        // Chat rows: face 'chat', no app, the secret sealed (no PEM, no key text in the column).
        let rows = sqlx::query(
            "SELECT id, face, app_name, secret FROM credentials WHERE account_sid = $1 ORDER BY id",
        )
        .bind(&acct)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(rows.len(), 3);
        for row in rows {
            let id: String = row.get(0);
            let face: String = row.get(1);
            let app: Option<String> = row.get(2);
            let secret: Option<Vec<u8>> = row.get(3);
            if id == push_id {
                assert_eq!(face, "push");
                continue;
            }
            assert!(id == chat.sid || id == gcm.sid);
            assert_eq!(face, "chat");
            assert_eq!(app, None);
            let secret = secret.expect("sealed content");
            for needle in [&b"BEGIN"[..], b"AIzaSyVerySecretServerKey", b"certificate"] {
                assert!(
                    !secret.windows(needle.len()).any(|w| w == needle),
                    "{}: plaintext in the secret column",
                    db.name
                );
            }
        }
        // Deleting every Chat credential leaves the Push row alone.
        store
            .delete_chat_credential(&acct, &chat.sid)
            .await
            .unwrap();
        store.delete_chat_credential(&acct, &gcm.sid).await.unwrap();
        let left: i64 = sqlx::query("SELECT COUNT(*) FROM credentials WHERE account_sid = $1")
            .bind(&acct)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 1);
        conn.close().await.unwrap();
    }
}
