//! Shared application state: `AppState(Arc<App>)`, cheap to clone into every handler.

use std::ops::Deref;
use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::retry::Backoff;
use crate::events::Hub;
use crate::live::Liveness;

pub struct App {
    pub pool: PgPool,
    pub settings: Settings,
    /// SHA-256 of the admin token, if one is configured.
    pub admin_digest: Option<[u8; 32]>,
    pub live: Arc<Liveness>,
    pub hub: Arc<Hub>,
    pub gauges: crate::telemetry::Gauges,
    pub shutdown: CancellationToken,
    /// Per-token request limiter (None: no limit).
    pub limiter: Option<governor::DefaultKeyedRateLimiter<uuid::Uuid>>,
    /// Caps and send budget of the WebSockets.
    pub sockets: Arc<crate::http::sockets::Sockets>,
    /// Open while PostgreSQL is unreachable: API calls that need it answer 503 at once.
    pub db_health: Arc<crate::breaker::Breaker>,
    /// The writers of batch reports, which group concurrent ones (group commit).
    pub reports: crate::service::report_groups::ReportGroups,
}

impl App {
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: self.settings.retry_backoff_base,
            max: self.settings.retry_backoff_max,
        }
    }
}

#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}
