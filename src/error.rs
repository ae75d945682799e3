//! The one domain error type. Transports map it exactly once: to `tonic::Status` in
//! `grpc::status` and to HTTP responses in `http`. Internal causes are logged, never sent.

/// Result with the domain [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a domain service can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; the message says how.
    #[error("{0}")]
    InvalidArgument(String),
    /// A named thing does not exist ("Topic not found").
    #[error("{0}")]
    NotFound(String),
    /// A unique name is taken ("Topic already exists").
    #[error("{0}")]
    AlreadyExists(String),
    /// The thing is in the wrong state ("ApiKey is already revoked").
    #[error("{0}")]
    FailedPrecondition(String),
    /// No, or bad, credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Credentials fine, action not allowed.
    #[error("{0}")]
    PermissionDenied(String),
    /// A limit was hit (rate limits, full queues).
    #[error("{0}")]
    ResourceExhausted(String),
    /// A dependency is down or the node is shutting down; retrying elsewhere may work.
    #[error("{0}")]
    Unavailable(String),
    /// A conditional publish found its topic otherwise than required (FAILED_PRECONDITION;
    /// the transports add the numbers a producer needs as metadata).
    #[error("{0}")]
    Conflict(Conflict),
    /// A bug or an unexpected dependency failure. Logged with its cause; clients see only
    /// "internal error".
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Why a conditional publish was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// `expected_last_offset` was not the topic's last offset.
    #[error("expected last offset {expected}, but the topic's last offset is {last}")]
    LastOffset {
        /// What the producer expected.
        expected: i64,
        /// The topic's last offset when the publish was checked.
        last: i64,
    },
    /// A producer id published with an epoch lower than one it published with before.
    #[error(
        "fenced: producer {producer_id:?} published with epoch {epoch}, but epoch {current} \
         has published since"
    )]
    Fenced {
        /// The producer id.
        producer_id: String,
        /// The epoch of the refused publish.
        epoch: i64,
        /// The highest epoch seen for the producer id on the topic.
        current: i64,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// Shorthand for [`Error::NotFound`].
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Error::Unavailable("database unavailable, retry".into())
            }
            _ => Error::Internal(e.into()),
        }
    }
}

/// Postgres SQLSTATE of a database error, if it is one.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// SQLSTATE for unique_violation.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";
/// SQLSTATE for undefined_table (a topic dropped under a reader).
pub(crate) const UNDEFINED_TABLE: &str = "42P01";
