//! Settings tweaks for `TestApp::spawn_with`.

use std::time::Duration;

use paddock::Settings;

/// The sweep, heartbeat and flush interval of [`fast`].
pub const TICK: Duration = Duration::from_millis(200);
/// The `stale_threshold` of [`fast`].
pub const STALE: Duration = Duration::from_millis(1500);

/// Fast sweeps: 200 ms intervals, runtimes stale after 1.5 s (> 3 × 200 ms, so the config is valid).
pub fn fast(s: &mut Settings) {
    s.sweep_interval = TICK;
    s.heartbeat_interval = TICK;
    s.heartbeat_flush_interval = TICK;
    s.stale_threshold = STALE;
}

/// A server whose heartbeat flusher does not run during the test (only at shutdown) and whose
/// runtimes do not go stale, so that stored rows (`last_seen_at` included) change only through
/// the requests of the test.
pub fn quiet(s: &mut Settings) {
    s.heartbeat_flush_interval = Duration::from_secs(600);
    s.stale_threshold = Duration::from_secs(3600);
}
