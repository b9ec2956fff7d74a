//! Admin authentication and roles: `Authorization: Bearer <token>` on every protected route,
//! and what each role may do there.
//!
//! | role | may |
//! |---|---|
//! | `admin` | everything, including admin tokens and the audit log |
//! | `editor` | read and change the configuration and the registry |
//! | `viewer` | read (GET) the configuration and the gateway's state |
//! | `registry` | only `/api/v1/registry/*`: the token services announce themselves with |

use crate::{AdminState, ApiError};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use portico_store::{Actor, Role};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

pub(crate) async fn require_token(
    State(state): State<AdminState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    let Some(secret) = presented else {
        return Err(ApiError::unauthorized("send an admin token as `Authorization: Bearer <token>`"));
    };
    let (actor, role) = match state.store.verify_token(secret).await {
        Ok(Some(token)) => {
            let actor = Actor { id: token.id, name: token.name };
            state.verified.remember(secret, &actor, token.role);
            (actor, token.role)
        }
        Ok(None) => return Err(ApiError::unauthorized("the admin token is unknown or revoked")),
        // With the store down, tokens verified before still open the admin API, so that an
        // operator can see what the gateway is doing (writes fail anyway). The store is the
        // authority again as soon as it answers, so revocations are never bypassed for long.
        Err(error) => match state.verified.recall(secret) {
            Some(known) => known,
            None => return Err(error.into()),
        },
    };
    if let Err(reason) = permits(role, request.method(), request.uri().path()) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed for this token", reason));
    }
    tracing::debug!(token = %actor.id, method = %request.method(), path = %request.uri().path(), "admin request");
    // Handlers record their changes as this token's (see `AdminState::writer`).
    Ok(ACTOR.scope(actor, next.run(request)).await)
}

tokio::task_local! {
    /// The token behind the request being handled.
    pub(crate) static ACTOR: Actor;
}

/// Paths only `admin` tokens may use.
const ADMIN_ONLY: [&str; 2] = ["/api/v1/tokens", "/api/v1/audit"];

/// Whether `role` may make this request; the reason when not.
fn permits(role: Role, method: &Method, path: &str) -> Result<(), String> {
    let admin_only = ADMIN_ONLY.iter().any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')));
    let reads = matches!(*method, Method::GET | Method::HEAD);
    match role {
        Role::Admin => Ok(()),
        Role::Editor | Role::Viewer if admin_only => {
            Err("only admin tokens may manage admin tokens or read the audit log".into())
        }
        Role::Editor => Ok(()),
        Role::Viewer if reads => Ok(()),
        Role::Viewer => Err("a viewer token may only read".into()),
        Role::Registry if path.starts_with(crate::REGISTRY_PREFIX) => Ok(()),
        Role::Registry => Err(format!("a registry token may only use {}*", crate::REGISTRY_PREFIX)),
    }
}

/// Tokens the store has confirmed, by SHA-256 of the secret, for use while it is unreachable.
#[derive(Default)]
pub(crate) struct VerifiedTokens(Mutex<HashMap<[u8; 32], (Actor, Role)>>);

impl VerifiedTokens {
    fn remember(&self, secret: &str, actor: &Actor, role: Role) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.insert(Sha256::digest(secret.as_bytes()).into(), (actor.clone(), role));
    }

    fn recall(&self, secret: &str) -> Option<(Actor, Role)> {
        let known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        known.get(&<[u8; 32]>::from(Sha256::digest(secret.as_bytes()))).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_table_says() {
        let cases = [
            (Role::Viewer, Method::GET, "/api/v1/routes", true),
            (Role::Viewer, Method::PUT, "/api/v1/routes/a", false),
            (Role::Viewer, Method::GET, "/api/v1/audit", false),
            (Role::Editor, Method::DELETE, "/api/v1/routes/a", true),
            (Role::Editor, Method::POST, "/api/v1/tokens", false),
            (Role::Editor, Method::GET, "/api/v1/tokens/x", false),
            (Role::Editor, Method::GET, "/api/v1/tokensx", true),
            (Role::Admin, Method::POST, "/api/v1/tokens", true),
            (Role::Registry, Method::POST, "/api/v1/registry/a/instances", true),
            (Role::Registry, Method::GET, "/api/v1/routes", false),
        ];
        for (role, method, path, allowed) in cases {
            assert_eq!(permits(role, &method, path).is_ok(), allowed, "{role:?} {method} {path}");
        }
    }
}
