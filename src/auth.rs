//! Bearer tokens: generation, SHA-256 digests, and the extractors `Admin`, `Member`, `Daemon`.
//!
//! Only digests are stored. Every request looks its token up (one unique-index probe), so a revoked
//! token fails at once on every replica.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db;
use crate::http::error::ApiError;
use crate::ids::{TokenId, WorkspaceId};
use crate::state::AppState;

/// A new random token: `pdk_` + 64 hex characters (256 bits).
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("pdk_{}", hex::encode(bytes))
}

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time comparison of two digests.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Recently authenticated tokens, so that hot paths (heartbeats, claims) do not read Postgres for
/// every request. Safe against revocation: a revocation evicts its token on every replica at once
/// (`events::feed::announce_revocation` locally and over `LISTEN`), and the cache is bypassed and
/// emptied whenever this replica is not listening (it could miss a revocation then).
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], (Caller, Instant)>>,
    /// Set while the replica's LISTEN connection is up.
    pub listening: AtomicBool,
}

/// How long a cached token is trusted without a revocation notice.
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Entries kept at most (the cache is emptied past it).
const TOKEN_CACHE_MAX: usize = 100_000;

impl Default for TokenCache {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            listening: AtomicBool::new(false),
        }
    }
}

impl TokenCache {
    fn get(&self, digest: &[u8; 32]) -> Option<Caller> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().expect("token cache lock");
        entries
            .get(digest)
            .filter(|(_, at)| at.elapsed() < TOKEN_TTL)
            .map(|(c, _)| *c)
    }

    fn put(&self, digest: [u8; 32], caller: Caller) {
        if !self.listening.load(Ordering::Acquire) {
            return;
        }
        let mut entries = self.entries.lock().expect("token cache lock");
        if entries.len() >= TOKEN_CACHE_MAX {
            entries.clear();
        }
        entries.insert(digest, (caller, Instant::now()));
    }

    /// A token was revoked: forget it.
    pub fn evict(&self, token: uuid::Uuid) {
        self.entries
            .lock()
            .expect("token cache lock")
            .retain(|_, (c, _)| c.token_id() != token);
    }

    /// The LISTEN connection is up (true) or lost (false: trust nothing cached).
    pub fn set_listening(&self, up: bool) {
        if !up {
            self.listening.store(false, Ordering::Release);
        }
        self.entries.lock().expect("token cache lock").clear();
        if up {
            self.listening.store(true, Ordering::Release);
        }
    }
}

/// Who is calling.
#[derive(Clone, Copy, Debug)]
pub enum Caller {
    Admin,
    Member {
        workspace: WorkspaceId,
        token: TokenId,
    },
    Daemon {
        workspace: WorkspaceId,
        token: TokenId,
    },
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The `?token=` query parameter (browsers cannot set headers on a WebSocket).
fn query_token(parts: &Parts) -> Option<String> {
    let query = parts.uri.query()?;
    url_param(query, "token")
}

fn url_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub async fn authenticate(
    state: &AppState,
    parts: &Parts,
    allow_query: bool,
) -> Result<Caller, ApiError> {
    let token = match bearer(parts) {
        Some(t) => t.to_owned(),
        None if allow_query => {
            query_token(parts).ok_or(ApiError::Unauthorized("missing bearer token"))?
        }
        None => return Err(ApiError::Unauthorized("missing bearer token")),
    };
    let d = digest(&token);
    let caller = if let Some(admin) = &state.admin_digest
        && digests_equal(admin, &d)
    {
        Caller::Admin
    } else if let Some(cached) = state.hub.tokens.get(&d) {
        cached
    } else {
        if state.db_health.is_open() {
            return Err(ApiError::DatabaseUnavailable);
        }
        let mut conn = state.pool.acquire().await?;
        let found = db::tokens::find_by_digest(&mut conn, &d)
            .await?
            .ok_or(ApiError::Unauthorized("invalid or revoked token"))?;
        let caller = match found.kind.as_str() {
            "member" => Caller::Member {
                workspace: found.workspace_id,
                token: found.id,
            },
            _ => Caller::Daemon {
                workspace: found.workspace_id,
                token: found.id,
            },
        };
        state.hub.tokens.put(d, caller);
        caller
    };
    rate_limit(state, &caller)?;
    Ok(caller)
}

impl Caller {
    /// The token behind the call (the nil id for the admin token).
    pub fn token_id(&self) -> uuid::Uuid {
        match self {
            Caller::Admin => uuid::Uuid::nil(),
            Caller::Member { token, .. } | Caller::Daemon { token, .. } => token.0,
        }
    }
}

/// Per-token request budget (DESIGN §2 `rate_limited`); counted per replica.
fn rate_limit(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    let Some(limiter) = &state.limiter else {
        return Ok(());
    };
    limiter.check_key(&caller.token_id()).map_err(|not_until| {
        metrics::counter!("paddock_rate_limited_total").increment(1);
        let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
        ApiError::RateLimited(not_until.wait_time_from(now))
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(*c);
        }
        let caller = authenticate(state, parts, false).await?;
        parts.extensions.insert(caller);
        Ok(caller)
    }
}

/// Extractors for routes that need one kind of caller; any other answers 403.
macro_rules! caller_of_kind {
    ($(#[$doc:meta])* $name:ident $(($field:ty))?, $pattern:pat => $value:expr, $needs:literal) => {
        $(#[$doc])*
        pub struct $name $((pub $field))?;

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;
            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
                match Caller::from_request_parts(parts, state).await? {
                    $pattern => Ok($value),
                    _ => Err(ApiError::Forbidden(concat!("this route needs ", $needs))),
                }
            }
        }
    };
}

caller_of_kind!(
    /// The admin token.
    Admin, Caller::Admin => Admin, "the admin token"
);
caller_of_kind!(
    /// A member token; carries its workspace.
    Member(WorkspaceId), Caller::Member { workspace, .. } => Member(workspace), "a member token"
);
caller_of_kind!(
    /// A daemon token; carries its workspace.
    Daemon(WorkspaceId), Caller::Daemon { workspace, .. } => Daemon(workspace), "a daemon token"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_digests_stable() {
        let a = generate_token();
        assert!(a.starts_with("pdk_") && a.len() == 68);
        assert_ne!(a, generate_token());
        assert_eq!(digest(&a), digest(&a));
        assert!(digests_equal(&digest("x"), &digest("x")));
        assert!(!digests_equal(&digest("x"), &digest("y")));
    }

    #[test]
    fn query_token_is_percent_decoded() {
        assert_eq!(
            url_param("a=1&token=pdk_ab%2Bc", "token").as_deref(),
            Some("pdk_ab+c")
        );
    }
}
