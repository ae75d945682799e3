//! Fresh databases: an empty Postgres database per test or benchmark run, created on the
//! server of an admin URL and dropped (`WITH (FORCE)`) with the value, or explicitly with
//! [`TestDb::drop_db`] where the caller wants to know it went; and the admin key made
//! straight in such a database.

use anyhow::{Context, Result, anyhow};
use eventrelay::auth::{ApiKeys, KeyType};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection};
use std::str::FromStr;
use uuid::Uuid;

/// Name prefix of the tests' databases (`scripts/test` drops any that a killed run left).
pub const TEST_PREFIX: &str = "er_test";

/// Name prefix of the benchmarks' databases (dropped by `scripts/test` likewise).
pub const BENCH_PREFIX: &str = "er_bench";

/// A fresh, empty database that is dropped with this value.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin_url: String,
    dropped: bool,
}

impl TestDb {
    /// A fresh database `er_test_<uuid>` on [`crate::admin_url`]; panics if Postgres refuses.
    pub async fn create() -> Self {
        Self::create_on(&crate::admin_url(), TEST_PREFIX)
            .await
            .expect("create a test database on ER_TEST_DATABASE_URL")
    }

    /// A fresh database `<prefix>_<uuid>` on the Postgres server of `admin_url` (whose own
    /// database is only connected to, to run `CREATE DATABASE` and later `DROP DATABASE`).
    pub async fn create_on(admin_url: &str, prefix: &str) -> Result<Self> {
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        let mut url = url::Url::parse(admin_url)
            .with_context(|| format!("the admin URL {admin_url:?} is not a URL"))?;
        url.set_path(&format!("/{name}"));
        let mut conn = quiet_connection(admin_url, "eventrelay-testkit")
            .await
            .with_context(|| "connecting to the admin URL's Postgres")?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let _ = conn.close().await;
        Ok(TestDb {
            name,
            url: url.to_string(),
            admin_url: admin_url.to_owned(),
            dropped: false,
        })
    }

    /// Drops the database now and says whether that worked (dropping the value does the
    /// same, silently).
    pub async fn drop_db(mut self) -> Result<()> {
        self.dropped = true;
        drop_database(&self.admin_url, &self.name).await
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<()> {
    let mut conn = quiet_connection(admin_url, "eventrelay-testkit").await?;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async context: a short-lived runtime on its own thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                let _ = rt.block_on(drop_database(&admin_url, &name));
            }
        })
        .join();
    }
}

/// A Postgres connection of a test's or benchmark's own, named `application_name` in
/// `pg_stat_activity`. Its statements are slow on purpose (`CREATE` and `DROP DATABASE`, a
/// benchmark's prefill), so sqlx's slow-statement warnings are off (nodes keep their own).
pub async fn quiet_connection(
    url: &str,
    application_name: &str,
) -> Result<PgConnection, sqlx::Error> {
    PgConnectOptions::from_str(url)?
        .application_name(application_name)
        .disable_statement_logging()
        .connect()
        .await
}

/// Makes an admin key straight in the database at `db_url` (named `name`) and returns its
/// bearer token.
pub async fn admin_key(db_url: &str, name: &str) -> Result<String> {
    let pool = eventrelay::db::connect(db_url, 1)
        .await
        .context("connecting to make an admin key")?;
    let key = ApiKeys::new(pool.clone())
        .create(KeyType::Admin, name, &[], &[])
        .await
        .map_err(|e| anyhow!("creating an admin key: {e}"));
    pool.close().await;
    key?.bearer_token()
        .ok_or_else(|| anyhow!("a new key carries its secret"))
}
