//! Postgres: the pool every domain service shares, and migrations. sqlx's migrator takes a
//! Postgres advisory lock while it runs, so any number of nodes may start (and migrate) at once.

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// The embedded migrations of `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A pooled connection idle longer than this is pinged before use (HikariCP's rule, with its
/// 500 ms window): one used that recently is taken to be alive.
const PING_IF_IDLE: Duration = Duration::from_millis(500);

/// Opens the pool. Statements are bounded so a stuck query cannot hold a connection forever.
///
/// sqlx pings every connection it hands out by default: one more round trip before each
/// statement, on the publish path too (measured: about a tenth of 1-event publish
/// throughput). Only connections idle for [`PING_IF_IDLE`] are pinged, so a busy node pays
/// nothing and connections cut while idle (a Postgres restart, a firewall) are still weeded
/// out. The price: when Postgres drops every session at once, a statement on a connection used
/// in the last half second fails (as statements in flight at that moment fail anyway), and
/// sqlx closes that connection.
pub async fn connect(url: &str, size: u32) -> Result<PgPool, sqlx::Error> {
    let opts = PgConnectOptions::from_str(url)?
        .application_name("eventrelay")
        .options([("statement_timeout", "60s"), ("lock_timeout", "30s")]);
    connect_with(opts, size).await
}

/// Opens another pool with the same options (see [`connect`]); its connections belong to the
/// runtime this is called on.
pub async fn connect_with(opts: PgConnectOptions, size: u32) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(size)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(opts)
        .await
}

/// Applies pending migrations (under sqlx's advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// True when every embedded migration has been applied: readiness needs it.
pub async fn migrations_applied(pool: &PgPool) -> bool {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    sqlx::query_scalar::<_, i64>(
        "SELECT coalesce(max(version), 0) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(pool)
    .await
    .map(|v| v >= latest)
    .unwrap_or(false)
}
