//! The use-case layer: what the transports call when an action needs the caller's
//! authorization decided before a policy-free store acts, or spans several domain services.
//! Each use case takes the caller's [`crate::auth::Principal`] first, so gRPC and the admin
//! UI enforce exactly the same rules; the stores below stay usable without one by the
//! operator's command line and by tests.

mod topics;

pub use topics::{ListedTopic, TopicAdmin};
