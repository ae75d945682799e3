//! The one mapping from the domain [`Error`] to gRPC status. Internal causes are logged here
//! and never sent to the client.

use crate::error::{Conflict, Error};
use tonic::{Code, Status};

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) | Error::Conflict(_) => Code::FailedPrecondition,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Code::Internal
            }
        };
        let mut status = Status::new(code, e.to_string());
        // What a conditional producer needs to go on, readable without parsing the message.
        let detail = match &e {
            Error::Conflict(Conflict::LastOffset { last, .. }) => Some(("er-last-offset", *last)),
            Error::Conflict(Conflict::Fenced { current, .. }) => {
                Some(("er-producer-epoch", *current))
            }
            _ => None,
        };
        if let Some((key, n)) = detail
            && let Ok(v) = n.to_string().parse()
        {
            status.metadata_mut().insert(key, v);
        }
        if code == Code::ResourceExhausted {
            // The retry hint: windows are one second long.
            status.metadata_mut().insert(
                "retry-after",
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_messages() {
        let s = Status::from(Error::AlreadyExists("Topic already exists".into()));
        assert_eq!(
            (s.code(), s.message()),
            (Code::AlreadyExists, "Topic already exists")
        );
        let s = Status::from(Error::Internal(anyhow::anyhow!("password=hunter2")));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("hunter2"));
    }
}
