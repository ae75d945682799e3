//! What every RPC handler shares: the caller the gate authenticated (see [`super::gate`]),
//! counted against its per-key rate limit (which limit is for [`crate::usecases::Calls`] to
//! decide), and one wrapper that times the call, counts it by status code and maps the domain
//! error once.

use super::gate::Caller;
use super::{Reply, Service};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::usecases::Call;
use tonic::{Request, Response, Status};

impl Service {
    /// Runs one RPC: times it, counts it by status code, maps the domain error once.
    pub(super) async fn call<T>(
        &self,
        rpc: &'static str,
        f: impl Future<Output = Result<T>>,
    ) -> Reply<T> {
        let start = std::time::Instant::now();
        let result = f.await.map(Response::new).map_err(Status::from);
        let code = match &result {
            Ok(_) => "ok",
            Err(s) => code_name(s.code()),
        };
        self.app.metrics.rpc(rpc, code, start.elapsed());
        result
    }

    /// The caller (authenticated by the gate), counted against its rate limit as a
    /// management call named by the request type.
    pub(super) async fn principal<T>(&self, req: &Request<T>) -> Result<Principal> {
        let p = self.caller(req)?.0;
        self.app
            .calls
            .admit(&p, Call::Manage(rpc_name::<T>()))
            .await?;
        Ok(p)
    }

    /// The caller (authenticated by the gate) and when its JWT bearer expires, not counted:
    /// publishes, pulls and streams count in their use cases.
    pub(super) fn caller<T>(&self, req: &Request<T>) -> Result<(Principal, Option<i64>)> {
        let Some(Caller { principal, expires }) = req.extensions().get::<Caller>() else {
            // Every call passes the gate; a call without its caller is a wiring bug.
            return Err(Error::Internal(anyhow::anyhow!(
                "gRPC call reached its handler without passing the authentication gate"
            )));
        };
        Ok((principal.clone(), *expires))
    }
}

/// `CreateTopic` for `eventrelay::proto::CreateTopicRequest`, and so on (`CreateJWT` keeps
/// the proto's spelling).
fn rpc_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let short = full.rsplit("::").next().unwrap_or(full);
    match short.strip_suffix("Request").unwrap_or(short) {
        "CreateJwt" => "CreateJWT",
        name => name,
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        InvalidArgument => "invalid_argument",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        FailedPrecondition => "failed_precondition",
        Unauthenticated => "unauthenticated",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        Unavailable => "unavailable",
        Internal => "internal",
        _ => "other",
    }
}
