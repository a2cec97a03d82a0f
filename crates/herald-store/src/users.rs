//! Push API users (`/v1/PushNotifications/Users`). A user is made by registering a device without
//! a `userId` (see `devices.rs`) and lives until it is deleted; deleting it deletes its
//! registrations in every app, and their devices.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Cursor, Page, PageRequest, Result, SqlStore, StoreError, keyset_condition};

/// A user as shown to its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// `comms_pushnotificationuser_...`
    pub id: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Users have no fields to change, so this is `created_at`; kept for the reference's shape.
    pub updated_at: i64,
}

#[async_trait]
pub trait UserStore {
    /// The account's users, newest first.
    async fn list_users(&self, account_sid: &str, page: &PageRequest) -> Result<Page<User>>;

    /// One user of the account; another account's or an unknown one → `NotFound`.
    async fn get_user(&self, account_sid: &str, user_id: &str) -> Result<User>;

    /// Deletes the user with its registrations in every app (and their devices); `NotFound` when
    /// the account has no such user.
    async fn delete_user(&self, account_sid: &str, user_id: &str) -> Result<()>;
}

fn user_from_row(row: &AnyRow) -> Result<User> {
    Ok(User {
        id: row.try_get(0)?,
        created_at: row.try_get(1)?,
        updated_at: row.try_get(2)?,
    })
}

#[async_trait]
impl UserStore for SqlStore {
    async fn list_users(&self, account_sid: &str, page: &PageRequest) -> Result<Page<User>> {
        let (at, id) = page.bounds();
        let sql = format!(
            "SELECT id, created_at, updated_at FROM users \
             WHERE account_sid = $1 AND {} \
             ORDER BY created_at DESC, id DESC LIMIT $4",
            keyset_condition("created_at", "id", 2, 3)
        );
        let rows = sqlx::query(&sql)
            .bind(account_sid)
            .bind(at)
            .bind(id)
            .bind(page.limit + 1)
            .fetch_all(self.reader())
            .await?;
        let users = rows.iter().map(user_from_row).collect::<Result<Vec<_>>>()?;
        Ok(Page::from_rows(users, page.limit, |user| Cursor {
            at: user.created_at,
            id: user.id.clone(),
        }))
    }

    async fn get_user(&self, account_sid: &str, user_id: &str) -> Result<User> {
        let row = sqlx::query(
            "SELECT id, created_at, updated_at FROM users WHERE account_sid = $1 AND id = $2",
        )
        .bind(account_sid)
        .bind(user_id)
        .fetch_optional(self.reader())
        .await?
        .ok_or(StoreError::NotFound)?;
        user_from_row(&row)
    }

    async fn delete_user(&self, account_sid: &str, user_id: &str) -> Result<()> {
        // One statement: the foreign keys delete the registrations and their devices with it.
        let deleted = sqlx::query("DELETE FROM users WHERE account_sid = $1 AND id = $2")
            .bind(account_sid)
            .bind(user_id)
            .execute(self.writer())
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
