//! Where the shared services are: the Postgres server the fresh databases are created on and
//! the Redis the nodes share, from the environment or the local defaults, and a cluster name
//! that keeps a test's Redis keys and channels to itself.

use uuid::Uuid;

/// The local Postgres server, as `scripts/services.sh` starts it.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The local Redis, as `scripts/services.sh` starts it.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Postgres server the tests create their databases on (`ER_TEST_DATABASE_URL`).
pub fn admin_url() -> String {
    std::env::var("ER_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into())
}

/// Redis the tests share (`ER_TEST_REDIS_URL`); each test namespaces itself with
/// [`unique_cluster_name`].
pub fn redis_url() -> String {
    std::env::var("ER_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_REDIS_URL.into())
}

/// A cluster name no other test uses: its Redis keys and channels are private to the test.
pub fn unique_cluster_name() -> String {
    format!("t{}", Uuid::new_v4().simple())
}
