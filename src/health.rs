//! Readiness, the one answer `/readyz` and the standard gRPC health service both give: a node
//! is ready when it is not draining, Postgres answers and every migration is applied. Redis
//! is reported, not required (nodes fall back to Postgres while it is away).

use crate::app::App;
use crate::proto::event_relay_server::EventRelayServer;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How long a readiness check waits for Postgres: a probe must get an answer well within its
/// own timeout while Postgres hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the gRPC health service's status is brought up to date.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// What readiness found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// The node is shutting down.
    pub draining: bool,
    /// Postgres answered and every migration is applied.
    pub postgres: bool,
    /// Redis state: "disabled", "connected" or "disconnected".
    pub redis: &'static str,
}

impl Readiness {
    /// Whether the node should receive traffic.
    pub fn ready(&self) -> bool {
        !self.draining && self.postgres
    }
}

/// Checks readiness now.
pub async fn check(app: &App) -> Readiness {
    let postgres = tokio::time::timeout(CHECK_TIMEOUT, app.migrations_applied())
        .await
        .unwrap_or(false);
    Readiness {
        draining: app.is_draining(),
        postgres,
        redis: app.bus.redis_state().as_str(),
    }
}

/// Keeps the gRPC health service's status (for the whole server, "", and for
/// `eventrelay.EventRelay`) equal to readiness until `stop` fires.
pub async fn report(app: App, health: HealthReporter, stop: CancellationToken) {
    let mut last = None;
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ready = check(&app).await.ready();
        if last != Some(ready) {
            set(&health, ready).await;
            last = Some(ready);
        }
    }
}

/// Sets the status of the whole server and of the EventRelay service.
pub async fn set(health: &HealthReporter, ready: bool) {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    health.set_service_status("", status).await;
    health
        .set_service_status(
            <EventRelayServer<crate::grpc::Service> as tonic::server::NamedService>::NAME,
            status,
        )
        .await;
}
