//! Tokens as the API sees them: the bearer scheme the spec declares (so
//! Swagger UI shows "Authorize" and generated clients take a token), and
//! the caller's scope checks as 403 problems.
//!
//! The server layer ([`crate::server::Admission`]) has already checked the
//! token (401) and put the [`Caller`] into the request; operations check
//! what they touch against it.

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use super::problem::{ApiError, ErrorStatus, Problem};
use crate::auth::{Caller, Denied};

/// The caller the server layer identified; anyone when the server has no
/// auth file.
pub fn caller_of(req: &Request) -> Caller {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anyone)
}

async fn checked(req: &Request, _: Bearer) -> Option<Caller> {
    Some(caller_of(req))
}

/// A token from `kv-store token new`, needed when the server runs with
/// `--auth-file`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", checker = "checked")]
pub struct BearerToken(Caller);

/// Every operation but the probes takes a token when the server has an
/// auth file, and none otherwise: in the spec, a bearer token or nothing.
#[derive(SecurityScheme)]
pub enum TokenAuth {
    Bearer(BearerToken),
    #[oai(fallback)]
    Without,
}

impl TokenAuth {
    /// Who calls. Without a token the server layer let the request through
    /// only because the server has no auth file.
    pub fn caller(&self) -> Caller {
        match self {
            Self::Bearer(BearerToken(caller)) => caller.clone(),
            Self::Without => Caller::Anyone,
        }
    }
}

impl From<Denied> for Problem {
    fn from(denied: Denied) -> Self {
        Problem::new(ErrorStatus::FORBIDDEN, "forbidden", "Forbidden", denied.0)
    }
}

impl From<Denied> for Box<Problem> {
    fn from(denied: Denied) -> Self {
        Box::new(denied.into())
    }
}

impl<S> From<Denied> for ApiError<S> {
    fn from(denied: Denied) -> Self {
        Problem::from(denied).into()
    }
}
