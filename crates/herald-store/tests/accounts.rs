//! Store conformance: accounts and API keys, on every backend.

use herald_store::testing::TestDatabase;
use herald_store::{AccountStore, StoreError};

#[tokio::test]
async fn accounts_and_keys_authenticate() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let new = store.create_account(Some("acme")).await.unwrap();
        assert!(new.account.sid.starts_with("AC"), "{}", db.name);
        assert_eq!(
            store
                .authenticate(&new.account.sid, &new.auth_token)
                .await
                .unwrap(),
            Some(new.account.sid.clone())
        );
        assert_eq!(
            store.authenticate(&new.account.sid, "wrong").await.unwrap(),
            None
        );
        assert_eq!(
            store
                .authenticate("ACnot-a-sid", &new.auth_token)
                .await
                .unwrap(),
            None
        );

        let key = store.create_api_key(&new.account.sid, None).await.unwrap();
        assert!(key.sid.starts_with("SK"));
        assert_eq!(
            store.authenticate(&key.sid, &key.secret).await.unwrap(),
            Some(new.account.sid.clone())
        );
        assert_eq!(
            store.authenticate(&key.sid, &new.auth_token).await.unwrap(),
            None
        );

        let missing = store
            .create_api_key("AC00000000000000000000000000000000", None)
            .await;
        assert!(matches!(missing, Err(StoreError::NotFound)), "{}", db.name);
        assert_eq!(
            store
                .get_account(&new.account.sid)
                .await
                .unwrap()
                .friendly_name
                .as_deref(),
            Some("acme")
        );
    }
}

#[tokio::test]
async fn bootstrap_happens_once() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let first = store
            .bootstrap_account()
            .await
            .unwrap()
            .expect("first start bootstraps");
        assert!(
            store
                .authenticate(&first.account.sid, &first.auth_token)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store.bootstrap_account().await.unwrap().is_none(),
            "{}",
            db.name
        );
        // A second store on the same database (another node, a restart) does not bootstrap either.
        let again = db.store().await;
        assert!(again.bootstrap_account().await.unwrap().is_none());
    }
}

#[tokio::test]
async fn no_plaintext_tokens_in_the_database_file() {
    let db = TestDatabase::sqlite().await;
    let store = db.store().await;
    let new = store.create_account(None).await.unwrap();
    store.close().await;
    let mut raw = std::fs::read(db.dir().join("herald.db")).unwrap();
    if let Ok(wal) = std::fs::read(db.dir().join("herald.db-wal")) {
        raw.extend(wal);
    }
    assert!(
        raw.windows(new.account.sid.len())
            .any(|w| w == new.account.sid.as_bytes())
    );
    assert!(
        !raw.windows(new.auth_token.len())
            .any(|w| w == new.auth_token.as_bytes())
    );
}
