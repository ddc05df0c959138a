//! Paddock: a Postgres-backed, multi-tenant control plane for AI-agent runtimes.
//!
//! `serve` wires the parts together: the Postgres pool (migrated at start), the liveness store,
//! the event hub and waker, the background loops, and the HTTP router. Every background loop is
//! owned by one `TaskTracker`, stops on the shared `CancellationToken`, and is awaited at shutdown.

pub mod auth;
pub mod breaker;
pub mod config;
pub mod db;
pub mod domain;
pub mod embedded;
pub mod events;
pub mod http;
pub mod ids;
pub mod live;
pub mod service;
pub mod state;
pub mod sweep;
pub mod telemetry;
pub mod transcripts;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Settings;
pub use http::router;

use crate::events::Hub;
use crate::live::{Backend, Liveness};
use crate::state::{App, AppState};

/// Builds the application state: connects, migrates (unless told not to) and picks the liveness store.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<AppState> {
    settings
        .validate()
        .map_err(anyhow::Error::msg)
        .context("invalid configuration")?;
    let url = settings.database_url.clone().context(
        "no database URL: set DATABASE_URL (or let `paddock serve` start its embedded cluster)",
    )?;
    let pool = db::connect(&url, settings.db_pool_size)
        .await
        .context("cannot connect to PostgreSQL")?;
    if !settings.no_migrate {
        db::MIGRATOR.run(&pool).await.context("migrations failed")?;
    }
    let backend = match &settings.redis_url {
        Some(url) => Backend::Redis(
            live::redis::RedisStore::connect(url, &settings.redis_prefix)
                .await
                .context("cannot connect to Redis")?,
        ),
        None => {
            tracing::warn!(
                "REDIS_URL not set: in-process liveness store, valid for a single replica only"
            );
            Backend::Memory(live::memory::MemoryStore::default())
        }
    };
    let live = Arc::new(Liveness::new(backend, settings.stale_threshold));
    let admin_digest = settings.admin_token.as_deref().map(auth::digest);
    let settings_rate_limit = settings.rate_limit;
    telemetry::handle();
    // A small pool of its own, so scrapes never compete with requests for connections.
    let gauges = telemetry::Gauges::new(
        db::connect(&url, 2)
            .await
            .context("cannot connect the metrics pool")?,
    );
    if admin_digest.is_none() {
        tracing::warn!("no admin token configured: admin routes refuse every caller");
    }
    let sockets = Arc::new(http::sockets::Sockets::new(&settings));
    let app = Arc::new(App {
        db_health: Arc::new(breaker::Breaker::new("postgres")),
        reports: service::report_groups::ReportGroups::default(),
        pool,
        sockets,
        settings,
        admin_digest,
        live,
        hub: Arc::new(Hub::default()),
        gauges,
        shutdown,
        limiter: std::num::NonZeroU32::new(settings_rate_limit).map(|rate| {
            let burst = rate.saturating_mul(std::num::NonZeroU32::new(2).expect("2 > 0"));
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        }),
    });
    service::report_groups::ReportGroups::start(&app);
    Ok(AppState(app))
}

/// Runs the sweepers' tick `ticks` times now, as the leader, and returns each tick's duration
/// (`paddock sweep`: for operators, and for `bench sweep`). Fails if another replica leads.
pub async fn sweep_now(
    settings: Settings,
    ticks: u64,
    replica: &str,
) -> anyhow::Result<Vec<std::time::Duration>> {
    let state = build(settings, CancellationToken::new()).await?;
    let mut leader =
        sweep::leader::Leader::new(state.settings.database_url.clone().unwrap_or_default());
    anyhow::ensure!(
        leader.ensure().await,
        "another replica holds the sweeper lock: it sweeps every sweep_interval already"
    );
    let mut out = Vec::new();
    for _ in 0..ticks {
        let t = std::time::Instant::now();
        sweep::tick(&state, replica).await;
        out.push(t.elapsed());
    }
    leader.release().await;
    state.pool.close().await;
    Ok(out)
}

/// Serves on `listener` until `shutdown` is cancelled; in-flight requests finish, background loops
/// stop, heartbeats are flushed once more.
pub async fn serve(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state = build(settings, shutdown.clone()).await?;
    let tracker = TaskTracker::new();
    tracker.spawn(live::flusher::run(state.clone(), shutdown.clone()));
    tracker.spawn(state.hub.waker.clone().run_timers(shutdown.clone()));
    tracker.spawn(sweep::run(state.clone(), shutdown.clone()));
    let pg = state.pool.connect_options();
    tracker.spawn(breaker::probe(
        state.db_health.clone(),
        shutdown.clone(),
        move || {
            let pg = pg.clone();
            async move { breaker::postgres_answers(&pg).await }
        },
    ));
    if state.live.is_redis() {
        let live = state.live.clone();
        tracker.spawn(breaker::probe(
            state.live.breaker.clone(),
            shutdown.clone(),
            move || {
                let live = live.clone();
                async move { live.ping().await.is_ok() }
            },
        ));
    }
    tracker.spawn(events::feed::notifier(
        state.pool.clone(),
        state.hub.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(events::feed::listener(
        state.pool.clone(),
        state.hub.clone(),
        state.db_health.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(events::feed::reader(
        state.pool.clone(),
        state.hub.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(transcripts::feed::notifier(
        state.pool.clone(),
        state.hub.clone(),
        shutdown.clone(),
    ));
    // The transcript feed starts at the horizon read before any socket can subscribe: a session's
    // replay then sees everything below it, and the feed everything from it.
    let transcripts_from = {
        let mut conn = state.pool.acquire().await?;
        db::transcripts::horizon(&mut conn).await?
    };
    tracker.spawn(transcripts::feed::reader(
        state.pool.clone(),
        state.hub.clone(),
        transcripts_from,
        shutdown.clone(),
    ));

    let app = router(state.clone());
    tracing::info!(addr = %listener.local_addr()?, "paddock listening");
    let limits = http::listen::Limits::from_settings(&state.settings);
    http::listen::serve(
        listener,
        app,
        limits,
        shutdown.clone(),
        http::SHUTDOWN_GRACE,
    )
    .await
    .context("server error")?;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    state.pool.close().await;
    tracing::info!("paddock stopped");
    Ok(())
}
