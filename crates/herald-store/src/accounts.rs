//! Accounts and API keys: who may call the API.

use async_trait::async_trait;
use herald_core::ids;
use herald_core::time::now_ms;
use sqlx::Row;

use crate::{Result, SqlStore, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub sid: String,
    pub friendly_name: Option<String>,
    pub created_at: i64,
}

/// An account just made, with its auth token: the only time the token exists in clear.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub account: Account,
    pub auth_token: String,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub sid: String,
    pub account_sid: String,
    pub secret: String,
}

#[async_trait]
pub trait AccountStore {
    async fn create_account(&self, friendly_name: Option<&str>) -> Result<NewAccount>;
    /// Creates the first account when the store has never had one (once per database, even with
    /// several nodes starting together); `None` when that already happened.
    async fn bootstrap_account(&self) -> Result<Option<NewAccount>>;
    async fn get_account(&self, sid: &str) -> Result<Account>;
    /// A new API key of `account_sid`; `NotFound` when the account does not exist.
    async fn create_api_key(
        &self,
        account_sid: &str,
        friendly_name: Option<&str>,
    ) -> Result<NewApiKey>;
    /// The account that `username:password` authenticates (an account SID and auth token, or an
    /// API key SID and secret), or `None`. Compares in constant time.
    async fn authenticate(&self, username: &str, password: &str) -> Result<Option<String>>;
    /// Whether the database answers (for `/healthz`).
    async fn ping(&self) -> Result<()>;
}

impl SqlStore {
    async fn insert_account(
        &self,
        conn: &mut sqlx::AnyConnection,
        friendly_name: Option<&str>,
    ) -> Result<NewAccount> {
        let sid = ids::new_sid(ids::ACCOUNT_SID);
        let auth_token = self.secrets().random_token();
        let now = now_ms();
        sqlx::query(
            "INSERT INTO accounts (sid, friendly_name, auth_token_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&sid)
        .bind(friendly_name)
        .bind(self.secrets().hash_token(&auth_token))
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(NewAccount {
            account: Account {
                sid,
                friendly_name: friendly_name.map(str::to_owned),
                created_at: now,
            },
            auth_token,
        })
    }
}

#[async_trait]
impl AccountStore for SqlStore {
    async fn create_account(&self, friendly_name: Option<&str>) -> Result<NewAccount> {
        let mut conn = self.writer().acquire().await?;
        self.insert_account(&mut conn, friendly_name).await
    }

    async fn bootstrap_account(&self) -> Result<Option<NewAccount>> {
        let mut tx = self.writer().begin().await?;
        let claimed = sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('bootstrapped', '1') ON CONFLICT (key) DO NOTHING",
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let existing: i64 = sqlx::query("SELECT COUNT(*) FROM accounts")
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        if claimed == 0 || existing > 0 {
            tx.commit().await?;
            return Ok(None);
        }
        let account = self.insert_account(&mut tx, Some("bootstrap")).await?;
        tx.commit().await?;
        Ok(Some(account))
    }

    async fn get_account(&self, sid: &str) -> Result<Account> {
        let row = sqlx::query("SELECT sid, friendly_name, created_at FROM accounts WHERE sid = $1")
            .bind(sid)
            .fetch_optional(self.reader())
            .await?
            .ok_or(StoreError::NotFound)?;
        Ok(Account {
            sid: row.get(0),
            friendly_name: row.get(1),
            created_at: row.get(2),
        })
    }

    async fn create_api_key(
        &self,
        account_sid: &str,
        friendly_name: Option<&str>,
    ) -> Result<NewApiKey> {
        self.get_account(account_sid).await?;
        let sid = ids::new_sid(ids::API_KEY_SID);
        let secret = self.secrets().random_token();
        sqlx::query(
            "INSERT INTO api_keys (sid, account_sid, friendly_name, secret_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&sid)
        .bind(account_sid)
        .bind(friendly_name)
        .bind(self.secrets().hash_token(&secret))
        .bind(now_ms())
        .execute(self.writer())
        .await?;
        Ok(NewApiKey {
            sid,
            account_sid: account_sid.to_owned(),
            secret,
        })
    }

    async fn authenticate(&self, username: &str, password: &str) -> Result<Option<String>> {
        let row = if ids::is_sid(ids::ACCOUNT_SID, username) {
            sqlx::query("SELECT sid, auth_token_hash FROM accounts WHERE sid = $1")
                .bind(username)
                .fetch_optional(self.reader())
                .await?
        } else if ids::is_sid(ids::API_KEY_SID, username) {
            sqlx::query("SELECT account_sid, secret_hash FROM api_keys WHERE sid = $1")
                .bind(username)
                .fetch_optional(self.reader())
                .await?
        } else {
            None
        };
        let Some(row) = row else { return Ok(None) };
        let hash: Vec<u8> = row.get(1);
        Ok(self
            .secrets()
            .verify_token(password, &hash)
            .then(|| row.get(0)))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(self.reader()).await?;
        Ok(())
    }
}
