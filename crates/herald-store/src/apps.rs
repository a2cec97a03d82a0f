//! Push API apps (`/v1/PushNotifications/Apps`). An app is made by its first credential and
//! deleted with its last one (see `credentials.rs`); here it is read and its default flag moved.
//! Exactly one app of an account that has apps is its default app.

use async_trait::async_trait;
use herald_core::AppName;
use herald_core::credential_content::PushCredentialType;
use herald_core::time::now_ms;
use sqlx::Row;

use crate::credentials::{Arg, bind_all, finish, stored_app_name};
use crate::sql::{self, Conn};
use crate::{Cursor, Page, PageRequest, Result, SqlStore, StoreError, keyset_condition};

/// An app as shown to its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRecord {
    pub name: AppName,
    pub is_default: bool,
    /// The app's default credential of each type it has, in the order APN, APN_SANDBOX, FCM.
    pub default_credentials: Vec<(PushCredentialType, String)>,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Bumped when the app's default flag or one of its default credentials changes.
    pub updated_at: i64,
}

/// List filters (all optional, combined with AND).
#[derive(Debug, Clone, Default)]
pub struct AppFilter {
    pub is_default: Option<bool>,
    /// `created_at >= created_from` (epoch ms).
    pub created_from: Option<i64>,
    /// `created_at <= created_until` (epoch ms).
    pub created_until: Option<i64>,
}

#[async_trait]
pub trait AppStore {
    /// The account's apps, newest first.
    async fn list_apps(
        &self,
        account_sid: &str,
        filter: &AppFilter,
        page: &PageRequest,
    ) -> Result<Page<AppRecord>>;

    /// One app of the account; another account's or an unknown one → `NotFound`.
    async fn get_app(&self, account_sid: &str, name: &AppName) -> Result<AppRecord>;

    /// `true` makes the app the account's default app (the previous default stops being one);
    /// `false` on the default app → [`StoreError::Invalid`] (one app must stay the default);
    /// `false` on another app changes nothing.
    async fn set_app_default(
        &self,
        account_sid: &str,
        name: &AppName,
        is_default: bool,
    ) -> Result<AppRecord>;

    /// For sending through an app: its default credential of each type, in the order APN,
    /// APN_SANDBOX, FCM (empty when the app does not exist).
    async fn app_default_credentials(
        &self,
        account_sid: &str,
        name: &AppName,
    ) -> Result<Vec<(PushCredentialType, String)>>;

    /// The account's default app, `None` when it has no apps.
    async fn account_default_app(&self, account_sid: &str) -> Result<Option<AppName>>;
}

const APP_COLUMNS: &str = "name, is_default, created_at, updated_at";

/// An app's row (its `APP_COLUMNS` first), from either kind of connection.
fn app_from_row(row: &sql::Row) -> Result<AppRecord> {
    let name: String = row.try_get(0)?;
    Ok(AppRecord {
        name: stored_app_name(&name)?,
        is_default: row.try_get::<i64>(1)? != 0,
        default_credentials: Vec::new(),
        created_at: row.try_get(2)?,
        updated_at: row.try_get(3)?,
    })
}

fn type_rank(kind: PushCredentialType) -> u8 {
    match kind {
        PushCredentialType::Apn => 0,
        PushCredentialType::ApnSandbox => 1,
        PushCredentialType::Fcm => 2,
    }
}

impl SqlStore {
    /// Fills in `default_credentials` of `apps` (one query) through `executor`.
    async fn with_default_credentials<'e, E>(
        &self,
        executor: E,
        account_sid: &str,
        apps: &mut [AppRecord],
    ) -> Result<()>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        if apps.is_empty() {
            return Ok(());
        }
        let mut args = vec![Arg::Text(account_sid.to_owned())];
        let mut placeholders = Vec::with_capacity(apps.len());
        for app in apps.iter() {
            args.push(Arg::Text(app.name.as_str().to_owned()));
            placeholders.push(format!("${}", args.len()));
        }
        let sql = format!(
            "SELECT app_name, credential_type, id FROM credentials \
             WHERE account_sid = $1 AND face = 'push' AND is_default = 1 \
               AND app_name IN ({})",
            placeholders.join(", ")
        );
        let rows = bind_all(sqlx::query(&sql), &args)
            .fetch_all(executor)
            .await?;
        for row in rows {
            let app: String = row.try_get(0)?;
            let kind: String = row.try_get(1)?;
            let Ok(kind) = kind.parse::<PushCredentialType>() else {
                continue;
            };
            if let Some(record) = apps.iter_mut().find(|a| a.name.as_str() == app) {
                record.default_credentials.push((kind, row.try_get(2)?));
            }
        }
        for app in apps.iter_mut() {
            app.default_credentials
                .sort_by_key(|(kind, _)| type_rank(*kind));
        }
        Ok(())
    }

    /// One app with its default credentials, in one query (`get_app` runs for each send that
    /// names an app).
    async fn app_in(
        &self,
        conn: &mut Conn<'_>,
        account_sid: &str,
        name: &AppName,
    ) -> Result<AppRecord> {
        let rows = sql::query(
            "SELECT a.name, a.is_default, a.created_at, a.updated_at, c.credential_type, c.id \
             FROM apps a LEFT JOIN credentials c ON c.account_sid = a.account_sid \
             AND c.app_name = a.name AND c.face = 'push' AND c.is_default = 1 \
             WHERE a.account_sid = $1 AND a.name = $2",
        )
        .bind(account_sid)
        .bind(name.as_str())
        .fetch_all(conn)
        .await?;
        let mut app = app_from_row(rows.first().ok_or(StoreError::NotFound)?)?;
        for row in &rows {
            let (Some(kind), Some(id)) = (
                row.try_get::<Option<String>>(4)?,
                row.try_get::<Option<String>>(5)?,
            ) else {
                continue;
            };
            if let Ok(kind) = kind.parse::<PushCredentialType>() {
                app.default_credentials.push((kind, id));
            }
        }
        app.default_credentials
            .sort_by_key(|(kind, _)| type_rank(*kind));
        Ok(app)
    }
}

#[async_trait]
impl AppStore for SqlStore {
    async fn list_apps(
        &self,
        account_sid: &str,
        filter: &AppFilter,
        page: &PageRequest,
    ) -> Result<Page<AppRecord>> {
        let (at, after_name) = page.bounds();
        let mut args = vec![
            Arg::Text(account_sid.to_owned()),
            Arg::Int(at),
            Arg::Text(after_name),
        ];
        let mut sql = format!(
            "SELECT {APP_COLUMNS} FROM apps WHERE account_sid = $1 AND {}",
            keyset_condition("created_at", "name", 2, 3)
        );
        let mut and = |condition: &str, arg: Arg| {
            args.push(arg);
            sql.push_str(&format!(" AND {condition} ${}", args.len()));
        };
        if let Some(flag) = filter.is_default {
            and("is_default =", Arg::Int(i64::from(flag)));
        }
        if let Some(from) = filter.created_from {
            and("created_at >=", Arg::Int(from));
        }
        if let Some(until) = filter.created_until {
            and("created_at <=", Arg::Int(until));
        }
        args.push(Arg::Int(page.limit + 1));
        sql.push_str(&format!(
            " ORDER BY created_at DESC, name DESC LIMIT ${}",
            args.len()
        ));
        // One read transaction for both queries, so the page and its defaults agree.
        let mut conn = self.reader().begin().await?;
        let rows = bind_all(sqlx::query(&sql), &args)
            .fetch_all(&mut *conn)
            .await?;
        let apps = rows
            .into_iter()
            .map(|row| app_from_row(&sql::Row::from(row)))
            .collect::<Result<Vec<_>>>()?;
        let mut page = Page::from_rows(apps, page.limit, |app| Cursor {
            at: app.created_at,
            id: app.name.as_str().to_owned(),
        });
        self.with_default_credentials(&mut *conn, account_sid, &mut page.items)
            .await?;
        conn.commit().await?;
        Ok(page)
    }

    async fn get_app(&self, account_sid: &str, name: &AppName) -> Result<AppRecord> {
        let mut conn = self.read_conn().await?;
        self.app_in(&mut conn.conn(), account_sid, name).await
    }

    async fn set_app_default(
        &self,
        account_sid: &str,
        name: &AppName,
        is_default: bool,
    ) -> Result<AppRecord> {
        let mut tx = self.writer().begin().await?;
        let result: Result<_> = async {
        self.lock_account(&mut tx, account_sid).await?;
        let app = self.app_in(&mut Conn::Sqlx(&mut tx), account_sid, name).await?;
        match (is_default, app.is_default) {
            (false, true) => {
                return Err(StoreError::invalid(
                    "isDefault",
                    format!(
                        "app {:?} is the account's default app and an account keeps exactly one; \
                         make another app the default instead",
                        name.as_str()
                    ),
                ));
            }
            (true, false) => {
                let now = now_ms();
                sqlx::query(
                    "UPDATE apps SET is_default = 0, updated_at = $2 \
                     WHERE account_sid = $1 AND is_default = 1",
                )
                .bind(account_sid)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE apps SET is_default = 1, updated_at = $3 \
                     WHERE account_sid = $1 AND name = $2",
                )
                .bind(account_sid)
                .bind(name.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            _ => {}
        }
        let app = self.app_in(&mut Conn::Sqlx(&mut tx), account_sid, name).await?;
        Ok(app)
        }
        .await;
        finish(tx, result).await
    }

    async fn app_default_credentials(
        &self,
        account_sid: &str,
        name: &AppName,
    ) -> Result<Vec<(PushCredentialType, String)>> {
        let mut conn = self.read_conn().await?;
        match self.app_in(&mut conn.conn(), account_sid, name).await {
            Ok(app) => Ok(app.default_credentials),
            Err(StoreError::NotFound) => Ok(Vec::new()),
            Err(other) => Err(other),
        }
    }

    async fn account_default_app(&self, account_sid: &str) -> Result<Option<AppName>> {
        let mut conn = self.read_conn().await?;
        let row = sql::query("SELECT name FROM apps WHERE account_sid = $1 AND is_default = 1")
            .bind(account_sid)
            .fetch_optional(&mut conn.conn())
            .await?;
        row.map(|row| stored_app_name(&row.try_get::<String>(0)?))
            .transpose()
    }
}
