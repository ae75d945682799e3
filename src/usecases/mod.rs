//! The use-case layer: what the transports call when an action needs the caller's
//! authorization decided before a policy-free store acts, or spans several domain services.
//! Each use case takes the caller's [`crate::auth::Principal`] first, so gRPC and the admin
//! UI enforce exactly the same rules; the stores below stay usable without one by the
//! operator's command line and by tests. Which per-key rate limit a call counts against is
//! decided here too ([`Calls`]), for every transport.

mod calls;
mod topics;

pub use calls::{Call, Calls};
pub use topics::{ListedTopic, TopicAdmin};
