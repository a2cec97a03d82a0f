//! Store conformance: users, device registrations and devices, on every backend. (Users are made
//! by registering devices, so their tests live here too.)

use std::collections::BTreeSet;

use herald_core::credential_content::{PushCredentialType, validate_push_content};
use herald_core::{AppName, DeviceStatus, DeviceToken, Provider, Tags};
use herald_store::credentials::NewCredential;
use herald_store::devices::{
    DeadDevice, DeviceRemoval, DeviceStore, RegisterChange, RegisterDevice, Registered,
};
use herald_store::testing::TestDatabase;
use herald_store::users::UserStore;
use herald_store::{AccountStore, CredentialStore, PageRequest, SqlStore, StoreError};
use serde_json::json;
use sqlx::{AnyConnection, Connection};

/// Makes app `name` of `account` directly in the table (apps are made by credentials, which are
/// not what this suite tests).
async fn make_app(db: &TestDatabase, account: &str, name: &str) -> AppName {
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(&db.url).await.unwrap();
    sqlx::query(
        "INSERT INTO apps (account_sid, name, is_default, created_at, updated_at) \
         VALUES ($1, $2, 0, 0, 0)",
    )
    .bind(account)
    .bind(name)
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    AppName::parse(name).unwrap()
}

struct Fixture {
    db: TestDatabase,
    store: SqlStore,
    account: String,
    app: AppName,
}

async fn fixtures() -> Vec<Fixture> {
    let mut all = Vec::new();
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let account = store.create_account(None).await.unwrap().account.sid;
        let app = make_app(&db, &account, "shop").await;
        all.push(Fixture {
            db,
            store,
            account,
            app,
        });
    }
    all
}

fn token(text: &str) -> DeviceToken {
    DeviceToken::parse(text).unwrap()
}

impl Fixture {
    fn name(&self) -> &'static str {
        self.db.name
    }

    async fn register_in(
        &self,
        app: &AppName,
        provider: Provider,
        device: &str,
        user: Option<&str>,
    ) -> Result<Registered, StoreError> {
        self.store
            .register_device(
                &self.account,
                &RegisterDevice {
                    app_name: app,
                    provider,
                    token: &token(device),
                    user_id: user,
                },
            )
            .await
    }

    async fn register(&self, device: &str, user: Option<&str>) -> Registered {
        self.register_in(&self.app, Provider::Apn, device, user)
            .await
            .unwrap()
    }

    /// `(provider, token, status)` of a registration's devices, sorted.
    async fn devices_of(&self, registration: &str) -> Vec<(Provider, String, DeviceStatus)> {
        let mut devices: Vec<_> = self
            .store
            .get_device_registration(&self.account, registration)
            .await
            .unwrap()
            .devices
            .into_iter()
            .map(|d| (d.provider, d.token, d.status))
            .collect();
        devices.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        devices
    }

    async fn user_count(&self) -> usize {
        self.store
            .list_users(&self.account, &PageRequest::first(1000))
            .await
            .unwrap()
            .items
            .len()
    }

    async fn active(&self, users: &[&str]) -> Vec<(String, Provider, String)> {
        let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
        self.store
            .active_devices_for_users(&self.account, &self.app, &users)
            .await
            .unwrap()
    }
}

fn active(provider: Provider, device: &str) -> (Provider, String, DeviceStatus) {
    (provider, device.to_owned(), DeviceStatus::Active)
}

#[tokio::test]
async fn registering_without_a_user_makes_one_and_is_idempotent() {
    for f in fixtures().await {
        let first = f.register("tok-a", None).await;
        assert_eq!(first.change, RegisterChange::NewUser, "{}", f.name());
        assert!(first.user_id.starts_with("comms_pushnotificationuser_"));
        assert!(
            first
                .registration_id
                .starts_with("comms_device_registration_")
        );

        let again = f.register("tok-a", None).await;
        assert_eq!(again.change, RegisterChange::Unchanged);
        assert_eq!(again.registration_id, first.registration_id);
        assert_eq!(again.user_id, first.user_id);
        assert_eq!(f.user_count().await, 1, "no second user made");

        let registration = f
            .store
            .get_device_registration(&f.account, &first.registration_id)
            .await
            .unwrap();
        assert_eq!(registration.app_name, "shop");
        assert_eq!(registration.user_id, first.user_id);
        assert_eq!(registration.devices.len(), 1);
        let device = &registration.devices[0];
        assert_eq!(
            (device.provider, device.token.as_str(), device.status),
            (Provider::Apn, "tok-a", DeviceStatus::Active)
        );
        assert_eq!(device.invalidated_at, None);
        assert_eq!(device.last_error, None);

        let user = f.store.get_user(&f.account, &first.user_id).await.unwrap();
        assert_eq!(user.created_at, user.updated_at);

        // The same token with the other provider is another device, so another user.
        let fcm = f
            .register_in(&f.app, Provider::Fcm, "tok-a", None)
            .await
            .unwrap();
        assert_eq!(fcm.change, RegisterChange::NewUser);
        assert_ne!(fcm.user_id, first.user_id);
        assert_eq!(f.user_count().await, 2);
    }
}

/// Concurrent registrations share commits on SQLite (group commit): the ones naming an unknown
/// user fail alone, with their field, and every other one is stored.
#[tokio::test]
async fn concurrent_registrations_with_failing_ones_store_all_others() {
    for f in fixtures().await {
        let f = std::sync::Arc::new(f);
        let mut tasks = Vec::new();
        for i in 0..64 {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                let user = (i % 5 == 0).then_some("comms_pushnotificationuser_nobody");
                let registered = f
                    .register_in(&f.app, Provider::Fcm, &format!("tok-{i}"), user)
                    .await;
                (i, registered)
            }));
        }
        let mut stored = 0;
        for task in tasks {
            let (i, registered) = task.await.unwrap();
            match registered {
                Ok(registered) => {
                    assert_eq!(
                        f.devices_of(&registered.registration_id).await,
                        vec![active(Provider::Fcm, &format!("tok-{i}"))],
                        "{}",
                        f.name()
                    );
                    stored += 1;
                }
                Err(StoreError::Invalid { field, .. }) if i % 5 == 0 => {
                    assert_eq!(field.as_deref(), Some("userId"));
                }
                Err(other) => panic!("{}: registration {i}: {other}", f.name()),
            }
        }
        assert_eq!((stored, f.user_count().await), (51, 51), "{}", f.name());
    }
}

#[tokio::test]
async fn registering_for_a_user_adds_devices_per_app() {
    for f in fixtures().await {
        let first = f.register("tok-1", None).await;
        let user = first.user_id.as_str();

        let second = f.register("tok-2", Some(user)).await;
        assert_eq!(second.change, RegisterChange::Added, "{}", f.name());
        assert_eq!(second.registration_id, first.registration_id);
        assert_eq!(
            f.register("tok-2", Some(user)).await.change,
            RegisterChange::Unchanged
        );
        assert_eq!(
            f.register("tok-1", Some(user)).await.change,
            RegisterChange::Unchanged
        );
        // Registered again without a user, it is found where it is.
        assert_eq!(f.register("tok-2", None).await, second_unchanged(&second));
        let fcm = f
            .register_in(&f.app, Provider::Fcm, "tok-2", Some(user))
            .await
            .unwrap();
        assert_eq!(fcm.change, RegisterChange::Added);
        assert_eq!(
            f.devices_of(&first.registration_id).await,
            vec![
                active(Provider::Apn, "tok-1"),
                active(Provider::Apn, "tok-2"),
                active(Provider::Fcm, "tok-2"),
            ]
        );

        // In another app the user gets a registration of their own there; the same token may be
        // registered in both apps.
        let games = make_app(&f.db, &f.account, "games").await;
        let other_app = f
            .register_in(&games, Provider::Apn, "tok-1", Some(user))
            .await
            .unwrap();
        assert_eq!(other_app.change, RegisterChange::Added);
        assert_ne!(other_app.registration_id, first.registration_id);
        assert_eq!(f.user_count().await, 1);

        let all = f
            .store
            .list_device_registrations(&f.account, user, None, &PageRequest::first(10))
            .await
            .unwrap();
        let ids: Vec<_> = all.items.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                other_app.registration_id.as_str(),
                first.registration_id.as_str()
            ],
            "newest first"
        );
        assert!(all.next.is_none());
        let in_games = f
            .store
            .list_device_registrations(&f.account, user, Some(&games), &PageRequest::first(10))
            .await
            .unwrap();
        assert_eq!(in_games.items.len(), 1);
        assert_eq!(in_games.items[0].id, other_app.registration_id);
        assert_eq!(in_games.items[0].devices.len(), 1);
    }
}

fn second_unchanged(registered: &Registered) -> Registered {
    Registered {
        change: RegisterChange::Unchanged,
        ..registered.clone()
    }
}

#[tokio::test]
async fn registering_another_users_device_moves_it() {
    for f in fixtures().await {
        let alice = f.register("shared-1", None).await;
        f.register("shared-2", Some(&alice.user_id)).await;
        let bob = f.register("bobs", None).await;

        let moved = f.register("shared-1", Some(&bob.user_id)).await;
        assert_eq!(moved.registration_id, bob.registration_id, "{}", f.name());
        assert_eq!(moved.user_id, bob.user_id);
        assert_eq!(
            moved.change,
            RegisterChange::Moved {
                from_registration: alice.registration_id.clone(),
                from_registration_deleted: false,
            }
        );
        assert_eq!(
            f.devices_of(&alice.registration_id).await,
            vec![active(Provider::Apn, "shared-2")]
        );
        assert_eq!(
            f.devices_of(&bob.registration_id).await,
            vec![
                active(Provider::Apn, "bobs"),
                active(Provider::Apn, "shared-1")
            ]
        );

        // Moving Alice's last device away deletes her registration, not her.
        let last = f.register("shared-2", Some(&bob.user_id)).await;
        assert_eq!(
            last.change,
            RegisterChange::Moved {
                from_registration: alice.registration_id.clone(),
                from_registration_deleted: true,
            }
        );
        assert!(matches!(
            f.store
                .get_device_registration(&f.account, &alice.registration_id)
                .await,
            Err(StoreError::NotFound)
        ));
        f.store.get_user(&f.account, &alice.user_id).await.unwrap();
        assert!(f.active(&[&alice.user_id]).await.is_empty());

        // Alice can get a device back: a new registration.
        let back = f.register("shared-1", Some(&alice.user_id)).await;
        assert_eq!(back.user_id, alice.user_id);
        assert_ne!(back.registration_id, alice.registration_id);
        assert!(matches!(back.change, RegisterChange::Moved { .. }));
        assert_eq!(f.active(&[&alice.user_id, &bob.user_id]).await, {
            let mut expected = vec![
                (alice.user_id.clone(), Provider::Apn, "shared-1".to_owned()),
                (bob.user_id.clone(), Provider::Apn, "bobs".to_owned()),
                (bob.user_id.clone(), Provider::Apn, "shared-2".to_owned()),
            ];
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            expected
        });
    }
}

#[tokio::test]
async fn invalid_devices_get_nothing_until_registered_again() {
    for f in fixtures().await {
        let reg = f.register("dead", None).await;
        f.register("alive", Some(&reg.user_id)).await;
        let before = f
            .store
            .get_device_registration(&f.account, &reg.registration_id)
            .await
            .unwrap();
        let error = json!({"code": 410, "message": "Unregistered", "providerStatus": 410});

        let invalidated = f
            .store
            .mark_device_invalid(&f.account, &f.app, Provider::Apn, "dead", &error)
            .await
            .unwrap()
            .expect("an ACTIVE device is invalidated");
        assert_eq!(
            invalidated.registration_id,
            reg.registration_id,
            "{}",
            f.name()
        );
        assert_eq!(invalidated.user_id, reg.user_id);
        assert_eq!(invalidated.app_name, "shop");
        assert_eq!(invalidated.token, "dead");
        assert_eq!(invalidated.provider, Provider::Apn);
        // Only once; unknown devices and other providers are no-ops.
        assert_eq!(
            f.store
                .mark_device_invalid(&f.account, &f.app, Provider::Apn, "dead", &error)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            f.store
                .mark_device_invalid(&f.account, &f.app, Provider::Fcm, "dead", &error)
                .await
                .unwrap(),
            None
        );

        let after = f
            .store
            .get_device_registration(&f.account, &reg.registration_id)
            .await
            .unwrap();
        let dead = after.devices.iter().find(|d| d.token == "dead").unwrap();
        assert_eq!(dead.status, DeviceStatus::Invalid);
        assert!(dead.invalidated_at.is_some());
        assert_eq!(dead.last_error.as_ref(), Some(&error));
        assert!(after.updated_at >= before.updated_at);
        assert_eq!(
            f.active(&[&reg.user_id]).await,
            vec![(reg.user_id.clone(), Provider::Apn, "alive".to_owned())]
        );

        // Registered again (here without a user): ACTIVE, with its error cleared.
        let again = f.register("dead", None).await;
        assert_eq!(again.change, RegisterChange::Reactivated);
        assert_eq!(again.registration_id, reg.registration_id);
        let revived = f
            .store
            .get_device_registration(&f.account, &reg.registration_id)
            .await
            .unwrap();
        let dead = revived.devices.iter().find(|d| d.token == "dead").unwrap();
        assert_eq!(dead.status, DeviceStatus::Active);
        assert_eq!(dead.invalidated_at, None);
        assert_eq!(dead.last_error, None);
        assert_eq!(f.active(&[&reg.user_id]).await.len(), 2);

        // An INVALID device registered for another user moves and is ACTIVE there.
        f.store
            .mark_device_invalid(&f.account, &f.app, Provider::Apn, "dead", &error)
            .await
            .unwrap()
            .unwrap();
        let carol = f.register("carols", None).await;
        let moved = f.register("dead", Some(&carol.user_id)).await;
        assert!(matches!(moved.change, RegisterChange::Moved { .. }));
        assert_eq!(
            f.active(&[&carol.user_id]).await.len(),
            2,
            "moved device is ACTIVE"
        );
    }
}

#[tokio::test]
async fn batch_invalidation_spans_apps_and_reports_only_changes() {
    for f in fixtures().await {
        let games = make_app(&f.db, &f.account, "games").await;
        let a = f.register("a", None).await;
        let b = f
            .register_in(&games, Provider::Fcm, "b", None)
            .await
            .unwrap();
        f.register("already", Some(&a.user_id)).await;
        f.store
            .mark_device_invalid(&f.account, &f.app, Provider::Apn, "already", &json!({}))
            .await
            .unwrap()
            .unwrap();
        let dead = |app: &AppName, provider, token: &str| DeadDevice {
            account_sid: f.account.clone(),
            app_name: app.clone(),
            provider,
            token: token.to_owned(),
            error: json!({"reason": token}),
        };
        let mut done = f
            .store
            .mark_devices_invalid(&[
                dead(&games, Provider::Fcm, "b"),
                dead(&f.app, Provider::Apn, "a"),
                dead(&f.app, Provider::Apn, "already"),
                dead(&f.app, Provider::Apn, "unknown"),
                dead(&games, Provider::Apn, "b"),
            ])
            .await
            .unwrap();
        done.sort_by(|x, y| x.token.cmp(&y.token));
        let summary: Vec<_> = done
            .iter()
            .map(|d| {
                (
                    d.app_name.as_str(),
                    d.token.as_str(),
                    d.user_id.as_str(),
                    d.registration_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("shop", "a", a.user_id.as_str(), a.registration_id.as_str()),
                ("games", "b", b.user_id.as_str(), b.registration_id.as_str()),
            ],
            "{}",
            f.name()
        );
        let b_device = &f
            .store
            .get_device_registration(&f.account, &b.registration_id)
            .await
            .unwrap()
            .devices[0];
        assert_eq!(b_device.status, DeviceStatus::Invalid);
        assert_eq!(b_device.last_error, Some(json!({"reason": "b"})));
        assert!(f.store.mark_devices_invalid(&[]).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn active_devices_resolve_many_users_at_once() {
    for f in fixtures().await {
        let games = make_app(&f.db, &f.account, "games").await;
        // More users than one IN list holds.
        let mut users = Vec::new();
        for i in 0..520 {
            users.push(f.register(&format!("bulk-{i}"), None).await.user_id);
        }
        f.register_in(&f.app, Provider::Fcm, "bulk-0-fcm", Some(&users[0]))
            .await
            .unwrap();
        f.register_in(&games, Provider::Apn, "games-only", Some(&users[1]))
            .await
            .unwrap();
        f.store
            .mark_device_invalid(&f.account, &f.app, Provider::Apn, "bulk-2", &json!({}))
            .await
            .unwrap();

        let mut asked = users.clone();
        asked.push(users[0].clone()); // a repeat is resolved once
        asked.push("comms_pushnotificationuser_00000000000000000000000000".into());
        let found = f
            .store
            .active_devices_for_users(&f.account, &f.app, &asked)
            .await
            .unwrap();
        assert_eq!(found.len(), 520, "{}", f.name()); // 520 - 1 invalid + 1 FCM
        let distinct: std::collections::HashSet<_> = found.iter().collect();
        assert_eq!(distinct.len(), found.len(), "no device twice");
        let of = |user: &str| -> Vec<(Provider, &str)> {
            found
                .iter()
                .filter(|d| d.0 == user)
                .map(|d| (d.1, d.2.as_str()))
                .collect()
        };
        let mut first = of(&users[0]);
        first.sort_by_key(|d| d.0.as_str());
        assert_eq!(
            first,
            vec![(Provider::Apn, "bulk-0"), (Provider::Fcm, "bulk-0-fcm")]
        );
        assert_eq!(of(&users[1]), vec![(Provider::Apn, "bulk-1")]);
        assert!(of(&users[2]).is_empty());
        assert_eq!(
            f.store
                .active_devices_for_users(&f.account, &games, &users[..3])
                .await
                .unwrap(),
            vec![(users[1].clone(), Provider::Apn, "games-only".to_owned())]
        );
        // Another account sees none of them.
        let other = f.store.create_account(None).await.unwrap().account.sid;
        assert!(
            f.store
                .active_devices_for_users(&other, &f.app, &users)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            f.store
                .active_devices_for_users(&f.account, &f.app, &[])
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn unknown_apps_and_users_are_refused_and_store_nothing() {
    for f in fixtures().await {
        let other = f.store.create_account(None).await.unwrap().account.sid;
        make_app(&f.db, &other, "theirs").await;
        let theirs = AppName::parse("theirs").unwrap();
        let missing = AppName::parse("missing").unwrap();
        for app in [&missing, &theirs] {
            let refused = f.register_in(app, Provider::Apn, "t", None).await;
            assert!(
                matches!(&refused, Err(StoreError::Invalid { field: Some(field), .. }) if field == "appName"),
                "{}: {refused:?}",
                f.name()
            );
        }

        let other_users_registration = f
            .store
            .register_device(
                &other,
                &RegisterDevice {
                    app_name: &theirs,
                    provider: Provider::Apn,
                    token: &token("t"),
                    user_id: None,
                },
            )
            .await
            .unwrap();
        for user in [
            "comms_pushnotificationuser_00000000000000000000000000",
            other_users_registration.user_id.as_str(),
        ] {
            let refused = f.register_in(&f.app, Provider::Apn, "t", Some(user)).await;
            assert!(
                matches!(&refused, Err(StoreError::Invalid { field: Some(field), .. }) if field == "userId"),
                "{refused:?}"
            );
        }
        assert_eq!(f.user_count().await, 0, "nothing stored");
        // The other account's device is still only theirs.
        let theirs_listed = f
            .store
            .list_device_registrations(
                &other,
                &other_users_registration.user_id,
                None,
                &PageRequest::first(10),
            )
            .await
            .unwrap();
        assert_eq!(theirs_listed.items.len(), 1);
        assert_eq!(theirs_listed.items[0].devices.len(), 1);
    }
}

#[tokio::test]
async fn removing_devices_keeps_the_registration_until_it_is_empty() {
    for f in fixtures().await {
        let reg = f.register("one", None).await;
        f.register("two", Some(&reg.user_id)).await;
        f.register_in(&f.app, Provider::Fcm, "two", Some(&reg.user_id))
            .await
            .unwrap();
        let id = reg.registration_id.as_str();

        assert_eq!(
            f.store.remove_device(&f.account, id, "nope").await.unwrap(),
            DeviceRemoval::NoSuchDevice,
            "{}",
            f.name()
        );
        // Both providers' devices with the token go.
        assert_eq!(
            f.store.remove_device(&f.account, id, "two").await.unwrap(),
            DeviceRemoval::Removed {
                registration_deleted: false
            }
        );
        assert_eq!(f.devices_of(id).await, vec![active(Provider::Apn, "one")]);

        let other = f.store.create_account(None).await.unwrap().account.sid;
        assert!(matches!(
            f.store.remove_device(&other, id, "one").await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(
            f.devices_of(id).await.len(),
            1,
            "untouched by another account"
        );

        assert_eq!(
            f.store.remove_device(&f.account, id, "one").await.unwrap(),
            DeviceRemoval::Removed {
                registration_deleted: true
            }
        );
        assert!(matches!(
            f.store.get_device_registration(&f.account, id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            f.store.remove_device(&f.account, id, "one").await,
            Err(StoreError::NotFound)
        ));
        f.store.get_user(&f.account, &reg.user_id).await.unwrap();
    }
}

#[tokio::test]
async fn deleting_a_registration_frees_its_devices() {
    for f in fixtures().await {
        let reg = f.register("d1", None).await;
        f.register("d2", Some(&reg.user_id)).await;
        let other = f.store.create_account(None).await.unwrap().account.sid;
        assert!(matches!(
            f.store
                .delete_device_registration(&other, &reg.registration_id)
                .await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            f.store
                .get_device_registration(&other, &reg.registration_id)
                .await,
            Err(StoreError::NotFound)
        ));

        f.store
            .delete_device_registration(&f.account, &reg.registration_id)
            .await
            .unwrap();
        assert!(matches!(
            f.store
                .delete_device_registration(&f.account, &reg.registration_id)
                .await,
            Err(StoreError::NotFound)
        ));
        assert!(f.active(&[&reg.user_id]).await.is_empty(), "{}", f.name());
        f.store.get_user(&f.account, &reg.user_id).await.unwrap();
        // The token is free: registered without a user it makes a new one.
        let fresh = f.register("d1", None).await;
        assert_eq!(fresh.change, RegisterChange::NewUser);
        assert_ne!(fresh.user_id, reg.user_id);
    }
}

#[tokio::test]
async fn deleting_a_user_deletes_its_registrations_in_every_app() {
    for f in fixtures().await {
        let games = make_app(&f.db, &f.account, "games").await;
        let reg = f.register("u1", None).await;
        let in_games = f
            .register_in(&games, Provider::Fcm, "u1-games", Some(&reg.user_id))
            .await
            .unwrap();
        let keeper = f.register("keeper", None).await;
        let other = f.store.create_account(None).await.unwrap().account.sid;
        assert!(matches!(
            f.store.delete_user(&other, &reg.user_id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            f.store.get_user(&other, &reg.user_id).await,
            Err(StoreError::NotFound)
        ));

        f.store.delete_user(&f.account, &reg.user_id).await.unwrap();
        assert!(
            matches!(
                f.store.get_user(&f.account, &reg.user_id).await,
                Err(StoreError::NotFound)
            ),
            "{}",
            f.name()
        );
        for id in [&reg.registration_id, &in_games.registration_id] {
            assert!(matches!(
                f.store.get_device_registration(&f.account, id).await,
                Err(StoreError::NotFound)
            ));
        }
        assert!(f.active(&[&reg.user_id]).await.is_empty());
        assert!(matches!(
            f.store.delete_user(&f.account, &reg.user_id).await,
            Err(StoreError::NotFound)
        ));
        // Registering for the deleted user is refused; the others are untouched.
        assert!(matches!(
            f.register_in(&f.app, Provider::Apn, "u1", Some(&reg.user_id))
                .await,
            Err(StoreError::Invalid { .. })
        ));
        assert_eq!(f.active(&[&keeper.user_id]).await.len(), 1);
        assert_eq!(f.user_count().await, 1);
    }
}

/// A credential of app `name` (what makes and keeps an app).
fn apn_credential(name: &str, kind: PushCredentialType) -> NewCredential {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/credentials/apn-token-content.json");
    let content: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    NewCredential {
        credential_type: kind,
        app_name: AppName::parse(name).unwrap(),
        is_default: None,
        tags: Tags::default(),
        content: validate_push_content(kind, &content).unwrap(),
    }
}

#[tokio::test]
async fn deleting_an_apps_last_credential_deletes_its_registrations() {
    for f in fixtures().await {
        let first = f
            .store
            .create_credential(&f.account, apn_credential("games", PushCredentialType::Apn))
            .await
            .unwrap();
        let second = f
            .store
            .create_credential(
                &f.account,
                apn_credential("games", PushCredentialType::ApnSandbox),
            )
            .await
            .unwrap();
        let games = first.app_name.clone();
        let reg = f.register("x", None).await;
        let in_games = f
            .register_in(&games, Provider::Apn, "x", Some(&reg.user_id))
            .await
            .unwrap();

        f.store
            .delete_credential(&f.account, &first.id)
            .await
            .unwrap();
        assert_eq!(
            f.devices_of(&in_games.registration_id).await.len(),
            1,
            "{}: the app lives on with its other credential",
            f.name()
        );
        let deletion = f
            .store
            .delete_credential(&f.account, &second.id)
            .await
            .unwrap();
        assert!(deletion.app_deleted);
        assert!(matches!(
            f.store
                .get_device_registration(&f.account, &in_games.registration_id)
                .await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(f.devices_of(&reg.registration_id).await.len(), 1);
        f.store.get_user(&f.account, &reg.user_id).await.unwrap();
        // Refused while the app is gone; made again, it starts empty.
        assert!(matches!(
            f.register_in(&games, Provider::Apn, "x", None).await,
            Err(StoreError::Invalid { .. })
        ));
        f.store
            .create_credential(&f.account, apn_credential("games", PushCredentialType::Apn))
            .await
            .unwrap();
        assert!(
            f.store
                .active_devices_for_users(&f.account, &games, std::slice::from_ref(&reg.user_id))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            f.register_in(&games, Provider::Apn, "x", None)
                .await
                .unwrap()
                .change,
            RegisterChange::NewUser
        );
    }
}

#[tokio::test]
async fn long_tokens_are_keys_too() {
    for f in fixtures().await {
        let long = "f".repeat(DeviceToken::MAX_LEN);
        let mut almost = long.clone();
        almost.replace_range(4095.., "e");
        let first = f.register(&long, None).await;
        assert_eq!(
            f.register(&long, None).await.registration_id,
            first.registration_id,
            "{}",
            f.name()
        );
        let second = f.register(&almost, None).await;
        assert_ne!(second.user_id, first.user_id);
        assert_eq!(
            f.store
                .remove_device(&f.account, &first.registration_id, &long)
                .await
                .unwrap(),
            DeviceRemoval::Removed {
                registration_deleted: true
            }
        );
    }
}

#[tokio::test]
async fn concurrent_registrations_of_one_token_end_with_one_owner() {
    for f in fixtures().await {
        let mut users = Vec::new();
        for i in 0..4 {
            users.push(f.register(&format!("owner-{i}"), None).await.user_id);
        }
        let store = f.store.clone();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let store = store.clone();
            let account = f.account.clone();
            let app = f.app.clone();
            // A quarter register without a user, the rest for one of four users.
            let user = (i % 4 != 0).then(|| users[i % 4].clone());
            tasks.push(tokio::spawn(async move {
                store
                    .register_device(
                        &account,
                        &RegisterDevice {
                            app_name: &app,
                            provider: Provider::Fcm,
                            token: &token("contested"),
                            user_id: user.as_deref(),
                        },
                    )
                    .await
            }));
        }
        // Every task finishes before anything is asserted (a panic with transactions still open
        // would leave the test database's teardown waiting on them).
        for result in futures::future::join_all(tasks).await {
            result
                .unwrap()
                .unwrap_or_else(|e| panic!("{}: {e}", f.name()));
        }
        let mut all_users = Vec::new();
        let mut page = PageRequest::first(1000);
        loop {
            let listed = f.store.list_users(&f.account, &page).await.unwrap();
            all_users.extend(listed.items.into_iter().map(|u| u.id));
            match listed.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        let owners: Vec<_> = f
            .store
            .active_devices_for_users(&f.account, &f.app, &all_users)
            .await
            .unwrap()
            .into_iter()
            .filter(|d| d.2 == "contested")
            .collect();
        assert_eq!(owners.len(), 1, "{}: {owners:?}", f.name());
        // Users made by registrations that lost the race were rolled back with them: at most
        // one new user (the first registration without a user, if it ran first).
        assert!(all_users.len() <= 5, "{}", all_users.len());
    }
}

#[tokio::test]
async fn concurrent_registrations_without_a_user_share_one() {
    for f in fixtures().await {
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let store = f.store.clone();
            let account = f.account.clone();
            let app = f.app.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .register_device(
                        &account,
                        &RegisterDevice {
                            app_name: &app,
                            provider: Provider::Apn,
                            token: &token("same-phone"),
                            user_id: None,
                        },
                    )
                    .await
            }));
        }
        let mut registrations = BTreeSet::new();
        let mut new_users = 0;
        for result in futures::future::join_all(tasks).await {
            let registered = result.unwrap().unwrap();
            new_users += usize::from(registered.change == RegisterChange::NewUser);
            registrations.insert((registered.registration_id, registered.user_id));
        }
        assert_eq!(registrations.len(), 1, "{}: {registrations:?}", f.name());
        assert_eq!(new_users, 1);
        assert_eq!(f.user_count().await, 1);
    }
}

#[tokio::test]
async fn users_and_registrations_page_newest_first_without_gaps() {
    for f in fixtures().await {
        let mut made = Vec::new();
        for i in 0..7 {
            made.push(f.register(&format!("p{i}"), None).await.user_id);
        }
        let other = f.store.create_account(None).await.unwrap().account.sid;
        assert!(
            f.store
                .list_users(&other, &PageRequest::first(10))
                .await
                .unwrap()
                .items
                .is_empty()
        );

        let mut seen = Vec::new();
        let mut page = PageRequest::first(3);
        let mut pages = 0;
        loop {
            let listed = f.store.list_users(&f.account, &page).await.unwrap();
            pages += 1;
            assert!(listed.items.len() <= 3);
            seen.extend(listed.items.into_iter().map(|u| u.id));
            match listed.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        assert_eq!(pages, 3, "{}", f.name());
        made.reverse();
        assert_eq!(seen, made, "every user once, newest first");

        // A user's registrations across apps, one per page.
        let user = made[0].clone();
        let mut expected = Vec::new();
        for name in ["a1", "a2", "a3"] {
            let app = make_app(&f.db, &f.account, name).await;
            expected.push(
                f.register_in(&app, Provider::Apn, "multi", Some(&user))
                    .await
                    .unwrap()
                    .registration_id,
            );
        }
        expected.push(
            f.store
                .list_device_registrations(&f.account, &user, Some(&f.app), &PageRequest::first(1))
                .await
                .unwrap()
                .items[0]
                .id
                .clone(),
        );
        let mut listed_ids = Vec::new();
        let mut page = PageRequest::first(1);
        loop {
            let listed = f
                .store
                .list_device_registrations(&f.account, &user, None, &page)
                .await
                .unwrap();
            assert_eq!(listed.items.len(), 1);
            assert_eq!(listed.items[0].devices.len(), 1, "devices come with each");
            listed_ids.push(listed.items[0].id.clone());
            match listed.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        // The app "shop" registration is the oldest, then a1, a2, a3.
        let shop = expected.pop().unwrap();
        expected.insert(0, shop);
        expected.reverse();
        assert_eq!(listed_ids, expected, "newest first, each once");
        assert!(
            f.store
                .list_device_registrations(&other, &user, None, &PageRequest::first(10))
                .await
                .unwrap()
                .items
                .is_empty(),
            "another account's user has no registrations there"
        );
    }
}
