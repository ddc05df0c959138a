//! Every setting of `paddock serve`: flag, env name, default and validation, in one struct.
//!
//! Durations take humantime syntax (`30s`, `5m`, `7d`). `Settings::validate` runs once at start and
//! names the setting it rejects.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn byte_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("KiB") {
        (n, 1 << 10)
    } else if let Some(n) = s.strip_suffix('B') {
        (n, 1)
    } else {
        (s, 1)
    };
    num.trim()
        .parse::<usize>()
        .map(|n| n * mult)
        .map_err(|_| format!("`{s}` is not a size such as 1MiB, 512KiB or 65536"))
}

/// `max_connections` unless set: more than most open-file limits allow, so it usually becomes that.
pub const DEFAULT_MAX_CONNECTIONS: usize = 50_000;

/// Settings of the server. `Settings::default()` is what `paddock serve` uses with no flags and no env.
#[derive(Args, Clone, Debug)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "PADDOCK_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// PostgreSQL URL. Unset: a private cluster is started from the local PostgreSQL binaries under
    /// the data dir.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Redis URL for the liveness store. Unset: in-process store (valid for one replica only).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key Paddock writes (lets several deployments or tests share one Redis).
    #[arg(long, env = "PADDOCK_REDIS_PREFIX", default_value = "paddock")]
    pub redis_prefix: String,

    /// Directory for the embedded cluster and the generated admin token.
    #[arg(long, env = "PADDOCK_DATA_DIR", default_value = "./.paddock")]
    pub data_dir: PathBuf,

    /// Admin token (creates workspaces). Unset in embedded mode: generated on first start, printed
    /// once and kept in the data dir.
    #[arg(long, env = "PADDOCK_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Do not run migrations at start.
    #[arg(long, env = "PADDOCK_NO_MIGRATE")]
    pub no_migrate: bool,

    /// Maximum connections in the Postgres pool.
    #[arg(long, env = "PADDOCK_DB_POOL_SIZE", default_value_t = 32)]
    pub db_pool_size: u32,

    /// How often the sweepers run (on the leader replica).
    #[arg(long, env = "PADDOCK_SWEEP_INTERVAL", default_value = "30s", value_parser = duration)]
    pub sweep_interval: Duration,

    /// Heartbeat interval told to daemons.
    #[arg(long, env = "PADDOCK_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = duration)]
    pub heartbeat_interval: Duration,

    /// How often heard runtimes' `last_seen_at` is written to Postgres.
    #[arg(long, env = "PADDOCK_HEARTBEAT_FLUSH_INTERVAL", default_value = "60s", value_parser = duration)]
    pub heartbeat_flush_interval: Duration,

    /// A runtime not heard for this long goes offline. 150 s = 10 missed 15 s heartbeats, and must
    /// exceed flush + heartbeat + sweep intervals so a live runtime is never swept while Redis is down.
    #[arg(long, env = "PADDOCK_STALE_THRESHOLD", default_value = "150s", value_parser = duration)]
    pub stale_threshold: Duration,

    /// A task dispatched but not started for this long fails with `dispatch_timeout`.
    #[arg(long, env = "PADDOCK_DISPATCH_TIMEOUT", default_value = "5m", value_parser = duration)]
    pub dispatch_timeout: Duration,

    /// A task running for this long fails with `running_timeout`.
    #[arg(long, env = "PADDOCK_RUNNING_TIMEOUT", default_value = "150m", value_parser = duration)]
    pub running_timeout: Duration,

    /// A task queued for this long fails with `queued_expired`.
    #[arg(long, env = "PADDOCK_QUEUED_TTL", default_value = "2h", value_parser = duration)]
    pub queued_ttl: Duration,

    /// Longest `dispatch_timeout`, `running_timeout` or `queued_ttl` one task may ask for at enqueue
    /// (longer answers 422).
    #[arg(long, env = "PADDOCK_MAX_TASK_TIMEOUT", default_value = "7d", value_parser = duration)]
    pub max_task_timeout: Duration,

    /// A queued task's effective priority rises by one step per full interval it has waited, so
    /// low priorities are never starved (0 turns aging off: priority alone, then FIFO).
    #[arg(long, env = "PADDOCK_PRIORITY_AGING", default_value = "60s", value_parser = duration)]
    pub priority_aging: Duration,

    /// At most this many queued tasks expire per sweep tick.
    #[arg(long, env = "PADDOCK_QUEUED_EXPIRE_BATCH", default_value_t = 500)]
    pub queued_expire_batch: i64,

    /// An offline runtime with no live agent is deleted after this long.
    #[arg(long, env = "PADDOCK_OFFLINE_RUNTIME_TTL", default_value = "7d", value_parser = duration)]
    pub offline_runtime_ttl: Duration,

    /// Events older than this are deleted.
    #[arg(long, env = "PADDOCK_EVENT_RETENTION", default_value = "24h", value_parser = duration)]
    pub event_retention: Duration,

    /// Terminal tasks (completed, failed, cancelled) finished longer ago than this are deleted with
    /// their attempts and transcripts (0 keeps them all).
    #[arg(long, env = "PADDOCK_TASK_RETENTION", default_value = "30d", value_parser = duration)]
    pub task_retention: Duration,

    /// First retry delay; doubles per attempt.
    #[arg(long, env = "PADDOCK_RETRY_BACKOFF_BASE", default_value = "1s", value_parser = duration)]
    pub retry_backoff_base: Duration,

    /// Cap of the retry delay.
    #[arg(long, env = "PADDOCK_RETRY_BACKOFF_MAX", default_value = "5m", value_parser = duration)]
    pub retry_backoff_max: Duration,

    /// Requests per second allowed per token (bursts up to twice that); above it requests answer
    /// 429 `rate_limited` with `Retry-After`. Counted per replica. 0 turns the limit off.
    #[arg(long, env = "PADDOCK_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,

    /// Largest accepted request body (answered 413 above it).
    #[arg(long, env = "PADDOCK_MAX_REQUEST_BODY", default_value = "1MiB", value_parser = byte_size)]
    pub max_request_body: usize,

    /// A connection must send a complete request header within this long of sending its first
    /// byte (otherwise it is closed).
    #[arg(long, env = "PADDOCK_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_read_timeout: Duration,

    /// A request body must arrive whole within this long (otherwise 408 `request_timeout`).
    #[arg(long, env = "PADDOCK_BODY_READ_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub body_read_timeout: Duration,

    /// A kept-alive connection with no request in flight and no traffic for this long is closed.
    /// Long polls and WebSockets are requests in flight: they keep their own bounds.
    #[arg(long, env = "PADDOCK_KEEPALIVE_TIMEOUT", default_value = "75s", value_parser = duration)]
    pub keepalive_timeout: Duration,

    /// Most client connections open at once (long polls and WebSockets included); one more is
    /// answered 503 `unavailable` and closed. Lowered at start to what the open-file limit allows.
    #[arg(long, env = "PADDOCK_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Most WebSockets (event stream and transcripts) one token may hold open on one replica; one
    /// more is refused with 429 `rate_limited`.
    #[arg(long, env = "PADDOCK_WS_MAX_PER_TOKEN", default_value_t = 64)]
    pub ws_max_per_token: usize,

    /// Most WebSockets one workspace may hold open on one replica.
    #[arg(long, env = "PADDOCK_WS_MAX_PER_WORKSPACE", default_value_t = 1000)]
    pub ws_max_per_workspace: usize,

    /// Most bytes of frames queued for WebSocket peers that do not read them, over all sockets of
    /// the replica; a socket whose frame would pass it is closed with 1013 (reconnect and resume).
    #[arg(long, env = "PADDOCK_WS_SEND_BUDGET", default_value = "256MiB", value_parser = byte_size)]
    pub ws_send_budget: usize,

    /// Most transcript content one attempt may store (bytes of message content); messages past it
    /// are dropped and the attempt is marked truncated.
    #[arg(long, env = "PADDOCK_TRANSCRIPT_MAX_BYTES", default_value = "8MiB", value_parser = byte_size)]
    pub transcript_max_bytes: usize,

    /// An attempt's transcript is deleted once its first message is older than this (0 keeps them
    /// until their task is deleted).
    #[arg(long, env = "PADDOCK_TRANSCRIPT_RETENTION", default_value = "7d", value_parser = duration)]
    pub transcript_retention: Duration,

    /// A dispatched or running attempt that a reconciling daemon (one that lists its attempts in
    /// heartbeats) has left unlisted for this long fails with `attempt_lost`. Default: three
    /// heartbeat intervals.
    #[arg(long, env = "PADDOCK_ATTEMPT_LOST_GRACE", value_parser = duration)]
    pub attempt_lost_grace: Option<Duration>,

    /// When a runtime goes offline, its dispatched and running tasks fail only after this grace; a
    /// runtime that comes back within it keeps them running. 0: they fail at once.
    #[arg(long, env = "PADDOCK_OFFLINE_GRACE", default_value = "0s", value_parser = duration)]
    pub offline_grace: Duration,

    /// A batch report that waits this long for a lock another transaction holds (a task row an
    /// operator's session has locked, say) leaves the replica's report writers and waits on its
    /// own, so that the replica's other reports go on. 0: it waits in the writer.
    #[arg(long, env = "PADDOCK_REPORT_LOCK_WAIT", default_value = "200ms", value_parser = duration)]
    pub report_lock_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            settings: Settings,
        }
        <Wrapper as clap::Parser>::parse_from(["paddock"]).settings
    }
}

impl Settings {
    /// `attempt_lost_grace`, or its default of three heartbeat intervals.
    pub fn attempt_lost_grace(&self) -> Duration {
        self.attempt_lost_grace
            .unwrap_or(self.heartbeat_interval * 3)
    }

    /// Checks the relations between settings; the message names the setting at fault.
    pub fn validate(&self) -> Result<(), String> {
        let floor = self.heartbeat_flush_interval + self.heartbeat_interval + self.sweep_interval;
        if self.stale_threshold <= floor {
            return Err(format!(
                "stale_threshold ({}) must exceed heartbeat_flush_interval + heartbeat_interval + \
                 sweep_interval ({}): otherwise a live runtime could be swept while Redis is down",
                humantime::format_duration(self.stale_threshold),
                humantime::format_duration(floor),
            ));
        }
        for (name, d) in [
            ("sweep_interval", self.sweep_interval),
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_flush_interval", self.heartbeat_flush_interval),
            ("dispatch_timeout", self.dispatch_timeout),
            ("running_timeout", self.running_timeout),
            ("queued_ttl", self.queued_ttl),
            ("retry_backoff_base", self.retry_backoff_base),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        for (name, d) in [
            ("dispatch_timeout", self.dispatch_timeout),
            ("running_timeout", self.running_timeout),
            ("queued_ttl", self.queued_ttl),
        ] {
            if d > self.max_task_timeout {
                return Err(format!(
                    "{name} ({}) must not exceed max_task_timeout ({})",
                    humantime::format_duration(d),
                    humantime::format_duration(self.max_task_timeout)
                ));
            }
        }
        if self.retry_backoff_max < self.retry_backoff_base {
            return Err("retry_backoff_max must be at least retry_backoff_base".into());
        }
        if self.queued_expire_batch < 1 {
            return Err("queued_expire_batch must be at least 1".into());
        }
        if self.max_request_body < 1024 {
            return Err("max_request_body must be at least 1KiB".into());
        }
        for (name, d) in [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("keepalive_timeout", self.keepalive_timeout),
        ] {
            if d < Duration::from_millis(10) {
                return Err(format!("{name} must be at least 10ms"));
            }
        }
        if self.ws_max_per_token < 1 || self.ws_max_per_workspace < 1 {
            return Err("ws_max_per_token and ws_max_per_workspace must be at least 1".into());
        }
        if self.max_connections < 1 {
            return Err("max_connections must be at least 1".into());
        }
        if self.transcript_max_bytes < 1024 {
            return Err("transcript_max_bytes must be at least 1KiB".into());
        }
        if self.attempt_lost_grace() <= self.heartbeat_interval {
            return Err(format!(
                "attempt_lost_grace ({}) must exceed heartbeat_interval ({}): a daemon lists its \
                 attempts once per heartbeat",
                humantime::format_duration(self.attempt_lost_grace()),
                humantime::format_duration(self.heartbeat_interval),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design_table() {
        let s = Settings::default();
        assert_eq!(s.sweep_interval, Duration::from_secs(30));
        assert_eq!(s.stale_threshold, Duration::from_secs(150));
        assert_eq!(s.offline_runtime_ttl, Duration::from_secs(7 * 86400));
        assert_eq!(s.max_request_body, 1 << 20);
        s.validate().unwrap();
    }

    #[test]
    fn stale_threshold_must_exceed_the_sum_of_intervals() {
        let s = Settings {
            stale_threshold: Duration::from_secs(105),
            ..Settings::default()
        };
        let err = s.validate().unwrap_err();
        assert!(err.contains("stale_threshold"), "{err}");
    }
}
