//! Liveness (DESIGN.md §5): heartbeats write the liveness store only; the flusher writes
//! `runtimes.last_seen_at` once per flush interval and once more at shutdown; a Redis outage never
//! takes a live runtime offline; a heartbeat racing the stale sweep is never lost; the in-process
//! store behaves the same for one replica.
//!
//! Conditions are awaited with `common::eventually`; sleeps only pace heartbeats (load) and
//! "still holds" checks.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::api::{agent_status, await_readyz_redis_down, heartbeat, readyz, runtime_status};
use common::db::count_events;
use common::heartbeater::{Heartbeater, assert_all_online};
use common::settings::{STALE, TICK, fast};
use common::wait::{eventually_some, holds_for};
use common::{TestApp, Ws, eventually};
use paddock::embedded::{PrivateRedis, RedisOptions};
use reqwest::StatusCode;
use sqlx::PgPool;
use uuid::Uuid;

/// A heartbeat that must answer 200 with every runtime online.
async fn beat_online(app: &TestApp, ws: &Ws, ids: &[&str]) {
    let r = heartbeat(app, ws, ids).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(r.body["runtimes"][i]["runtime_id"], *id, "{:?}", r.body);
        assert_eq!(r.body["runtimes"][i]["status"], "online", "{:?}", r.body);
    }
}

async fn last_seen(pool: &PgPool, id: &str) -> DateTime<Utc> {
    let id: Uuid = id.parse().unwrap();
    sqlx::query_scalar("SELECT last_seen_at FROM runtimes WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The flusher
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn heartbeats_touch_only_the_liveness_store() {
    let flush = Duration::from_secs(1);
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.heartbeat_flush_interval = flush;
        s.stale_threshold = Duration::from_secs(3);
    })
    .await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "steady").await;
    let registered = last_seen(&app.pool, &rt).await;

    // Heartbeat until a flush moves last_seen_at: a flush has just happened.
    let flushed = eventually_some(flush * 3, "a flush writes last_seen_at", || async {
        beat_online(&app, &ws, &[&rt]).await;
        let seen = last_seen(&app.pool, &rt).await;
        (seen != registered).then_some(seen)
    })
    .await;
    let window = Instant::now();
    // Until the next flush (a second away), heartbeats leave the row alone.
    for _ in 0..5 {
        beat_online(&app, &ws, &[&rt]).await;
        assert_eq!(
            last_seen(&app.pool, &rt).await,
            flushed,
            "a heartbeat wrote last_seen_at {:?} after the flush",
            window.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    assert!(
        window.elapsed() < flush,
        "the quiet window overran the flush interval; the check above proves nothing"
    );
    // The next flush writes the time of the latest heartbeat.
    let sent = Utc::now();
    beat_online(&app, &ws, &[&rt]).await;
    let next = eventually_some(
        flush + Duration::from_millis(500),
        "the next flush",
        || async {
            let seen = last_seen(&app.pool, &rt).await;
            (seen > flushed).then_some(seen)
        },
    )
    .await;
    assert!(
        next >= sent - chrono::Duration::milliseconds(1),
        "flushed {next}, but the last heartbeat was sent at {sent}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_flusher_writes_last_seen_at_once_more_at_graceful_shutdown() {
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.heartbeat_flush_interval = Duration::from_secs(60);
        s.stale_threshold = Duration::from_secs(120);
    })
    .await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "leaving").await;
    let registered = last_seen(&app.pool, &rt).await;
    let sent = Utc::now();
    beat_online(&app, &ws, &[&rt]).await;
    assert_eq!(
        last_seen(&app.pool, &rt).await,
        registered,
        "a heartbeat wrote Postgres"
    );
    let url = app.database_url.clone();
    app.stop().await.unwrap();
    let pool = PgPool::connect(&url).await.unwrap();
    let seen = last_seen(&pool, &rt).await;
    assert!(
        seen > registered && seen >= sent - chrono::Duration::milliseconds(1),
        "last_seen_at {seen} after shutdown; registered {registered}, heartbeat at {sent}"
    );
    pool.close().await;
}

// ---------------------------------------------------------------------------------------------
// Redis outage
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn redis_outage_keeps_live_runtimes_online() {
    redis_outage_scenario(STALE).await;
}

/// DESIGN §5 refuses `stale_threshold` ≤ flush + heartbeat + sweep intervals because below it "a
/// live runtime could be swept while Redis is down"; the converse is the promise tested here: at
/// the smallest accepted threshold (3 × 200 ms intervals, 700 ms), an outage sweeps no live runtime.
#[tokio::test]
async fn redis_outage_keeps_live_runtimes_online_at_the_smallest_valid_stale_threshold() {
    redis_outage_scenario(Duration::from_millis(700)).await;
}

/// A runtime heartbeating every 200 ms through a Redis outage of more than 2 × `stale`: every
/// heartbeat answers 200 online, the runtime never goes offline, readyz says 503 (redis down)
/// during the outage and 200 after; a silent runtime still goes offline during the outage.
async fn redis_outage_scenario(stale: Duration) {
    let dir = std::env::temp_dir().join(format!("paddock-liveness-{}", Uuid::new_v4().simple()));
    let mut redis = PrivateRedis::start(RedisOptions { dir: dir.clone() })
        .await
        .expect("private Redis");
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.stale_threshold = stale;
        s.redis_url = Some(redis.url());
    })
    .await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "resilient").await;
    let agent = app.agent(&ws, &rt, 1).await;
    // On a timer, as a daemon told heartbeat_interval would: while Redis is down a heartbeat takes
    // over a second to answer, and a daemon that waited for each reply would heartbeat only about
    // once per second and a half (see the latencies printed below).
    let beats = Heartbeater::on_timer(&app, &ws, &[&rt], TICK);
    let r = readyz(&app).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["checks"]["redis"], "up", "{:?}", r.body);

    redis.stop().await.expect("stop Redis");
    let outage = Instant::now();
    await_readyz_redis_down(&app).await;
    // A runtime that registers and then stays silent during the outage still goes offline: with
    // the store down, the stale sweep trusts the database.
    let silent = app.runtime(&ws, "silent-in-outage").await;
    let hold = (stale * 2 + Duration::from_millis(500)).max(Duration::from_secs(3));
    holds_for(
        hold,
        "the heartbeating runtime is online while Redis is down",
        || async {
            runtime_status(&app, &ws, &rt).await == "online"
                && agent_status(&app, &ws, &agent).await == "idle"
        },
    )
    .await;
    eventually(
        stale * 2 + Duration::from_secs(2),
        "the silent runtime goes offline during the outage",
        || async { runtime_status(&app, &ws, &silent).await == "offline" },
    )
    .await;
    let r = readyz(&app).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
    let down_for = outage.elapsed();

    redis.start_again().await.expect("start Redis again");
    eventually(
        Duration::from_secs(10),
        "readyz reports Redis up",
        || async { readyz(&app).await.status == StatusCode::OK },
    )
    .await;
    holds_for(
        stale * 2,
        "the runtime is online after Redis returns",
        || async { runtime_status(&app, &ws, &rt).await == "online" },
    )
    .await;
    let beats = beats.stop().await;
    let slow: Vec<u128> = beats
        .iter()
        .filter(|b| b.took > TICK)
        .map(|b| b.took.as_millis())
        .collect();
    eprintln!(
        "stale {stale:?}: Redis down for {down_for:?}; {} heartbeats, {} slower than {TICK:?} (ms): {slow:?}",
        beats.len(),
        slow.len()
    );
    assert_all_online(&beats);
    assert_eq!(
        count_events(&app.pool, "runtime.offline", &rt).await,
        0,
        "the live runtime was taken offline"
    );
    app.stop().await.unwrap();
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// A heartbeat racing the stale sweep
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn concurrent_heartbeat_racing_the_stale_sweep_is_never_lost() {
    let tick = Duration::from_millis(100);
    let stale = Duration::from_millis(600);
    let app = TestApp::spawn_with(|s| {
        s.sweep_interval = tick;
        s.heartbeat_interval = tick;
        s.heartbeat_flush_interval = tick;
        s.stale_threshold = stale;
    })
    .await;
    let ws = app.workspace().await;
    let rt = app.runtime(&ws, "edgy").await;
    let agent = app.agent(&ws, &rt, 1).await;
    let mut revived = 0;
    for cycle in 0..20 {
        // Silent for about stale_threshold: the next heartbeat lands before, at or after the sweep.
        let silent = Duration::from_millis(rand::random_range(450..=850));
        tokio::time::sleep(silent).await;
        let online_before = count_events(&app.pool, "runtime.online", &rt).await;
        beat_online(&app, &ws, &[&rt]).await;
        eventually(
            Duration::from_secs(1),
            &format!("cycle {cycle} (silent {silent:?}): online after the heartbeat"),
            || async { runtime_status(&app, &ws, &rt).await == "online" },
        )
        .await;
        if count_events(&app.pool, "runtime.online", &rt).await > online_before {
            revived += 1;
        }
        // While heartbeats continue, it stays online: no flap.
        let offline_before = count_events(&app.pool, "runtime.offline", &rt).await;
        let start = Instant::now();
        while start.elapsed() < stale * 2 {
            tokio::time::sleep(tick).await;
            beat_online(&app, &ws, &[&rt]).await;
            assert_eq!(
                runtime_status(&app, &ws, &rt).await,
                "online",
                "cycle {cycle} (silent {silent:?}): offline {:?} into steady heartbeats",
                start.elapsed()
            );
        }
        assert_eq!(
            count_events(&app.pool, "runtime.offline", &rt).await,
            offline_before,
            "cycle {cycle} (silent {silent:?}): taken offline while heartbeating"
        );
        assert_ne!(agent_status(&app, &ws, &agent).await, "offline");
    }
    let online = count_events(&app.pool, "runtime.online", &rt).await;
    let offline = count_events(&app.pool, "runtime.offline", &rt).await;
    eprintln!(
        "20 cycles: {revived} revived by the racing heartbeat; {offline} offline / {online} online events"
    );
    // Every offline was followed by the online of its reviving heartbeat.
    assert_eq!(
        online, offline,
        "runtime.offline and runtime.online do not pair up"
    );
    app.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The in-process store
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn in_process_store_takes_silent_runtimes_offline_and_keeps_heartbeating_ones_online() {
    let app = TestApp::spawn_with(|s| {
        fast(s);
        s.redis_url = None;
    })
    .await;
    let r = readyz(&app).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.body["checks"].get("redis").is_none(), "{:?}", r.body);
    let ws = app.workspace().await;
    let live = app.runtime(&ws, "live").await;
    let silent = app.runtime(&ws, "silent").await;
    let silent_agent = app.agent(&ws, &silent, 1).await;
    let beats = Heartbeater::start(&app, &ws, &[&live], TICK);

    eventually(STALE * 4, "the silent runtime goes offline", || async {
        runtime_status(&app, &ws, &silent).await == "offline"
    })
    .await;
    assert_eq!(agent_status(&app, &ws, &silent_agent).await, "offline");
    assert_eq!(count_events(&app.pool, "runtime.offline", &silent).await, 1);
    holds_for(STALE * 3, "the heartbeating runtime is online", || async {
        runtime_status(&app, &ws, &live).await == "online"
    })
    .await;

    // A heartbeat brings the silent one back.
    beat_online(&app, &ws, &[&silent]).await;
    assert_eq!(runtime_status(&app, &ws, &silent).await, "online");
    assert_eq!(count_events(&app.pool, "runtime.online", &silent).await, 1);
    assert_eq!(agent_status(&app, &ws, &silent_agent).await, "idle");

    assert_all_online(&beats.stop().await);
    assert_eq!(count_events(&app.pool, "runtime.offline", &live).await, 0);
    app.stop().await.unwrap();
}
