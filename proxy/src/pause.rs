//! `PGSPLIT PAUSE`, `RESUME` and `SHUTDOWN`: the admin side of
//! [`crate::lifecycle`].

use std::time::Duration;

use pgsplit_protocol::encode::ErrorInfo;

use crate::lifecycle::State;
use crate::shared::Shared;

/// How often PAUSE looks whether the running transactions have finished.
const POLL: Duration = Duration::from_millis(20);

/// New requests wait from now on; returns once no server connection is in
/// use and the idle ones are closed, so a server can be restarted without
/// a client error. Gives up (and resumes) if transactions still run after
/// `timeouts.query_wait_timeout`: by then the waiting requests fail anyway.
pub async fn pause(shared: &Shared) -> Result<String, ErrorInfo> {
    let before = shared.lifecycle.advance(State::Paused);
    if before.is_stopping() {
        return Err(stopping("PAUSE", before));
    }
    let limit = wait_limit(shared);
    let paused = || shared.lifecycle.state() == State::Paused;
    let finished = tokio::time::timeout(limit, async {
        while paused() && shared.pools.in_use() > 0 {
            tokio::time::sleep(POLL).await;
        }
    })
    .await;
    if !paused() {
        // A RESUME or a shutdown came first: this PAUSE is over.
        return Err(ErrorInfo::error(
            "57014",
            format!(
                "pgsplit: PAUSE did not complete: pgsplit is {} now",
                shared.lifecycle.state().as_str()
            ),
        ));
    }
    if finished.is_err() {
        let running = shared.pools.in_use();
        shared.lifecycle.advance(State::Running);
        return Err(ErrorInfo::error(
            "55006",
            format!(
                "pgsplit: PAUSE gave up: {running} server connections were still in use after {}; traffic resumed",
                humantime::format_duration(limit)
            ),
        )
        .hint("A transaction or a session-pooled client is holding them: find it in pg_stat_activity, end it, and PAUSE again."));
    }
    let closed = shared.pools.close_idle().await;
    tracing::info!(
        server_connections_closed = closed,
        "paused: new requests wait until RESUME"
    );
    Ok(format!(
        "pgsplit is paused: no transaction is running and {closed} idle server connections were closed; \
         new requests wait (up to timeouts.query_wait_timeout) until PGSPLIT RESUME"
    ))
}

pub fn resume(shared: &Shared) -> Result<Option<String>, ErrorInfo> {
    match shared.lifecycle.advance(State::Running) {
        State::Paused => {
            tracing::info!("resumed");
            Ok(None)
        }
        State::Running => Ok(Some("pgsplit was not paused".to_owned())),
        s => Err(stopping("RESUME", s)),
    }
}

pub fn shutdown(shared: &Shared) -> String {
    let timeout = shared.config.timeouts.shutdown_timeout;
    shared.lifecycle.advance(State::Draining);
    format!(
        "pgsplit is shutting down: idle clients are told 57P01 now, transactions get timeouts.shutdown_timeout ({}) to finish",
        humantime::format_duration(timeout)
    )
}

/// A PAUSE waits at most as long as the requests it holds back may.
fn wait_limit(shared: &Shared) -> Duration {
    match shared.config.timeouts.query_wait_timeout {
        d if d.is_zero() => Duration::from_secs(120),
        d => d,
    }
}

fn stopping(command: &str, state: State) -> ErrorInfo {
    ErrorInfo::error(
        "55000",
        format!(
            "pgsplit: cannot {command}: pgsplit is shutting down ({})",
            state.as_str()
        ),
    )
}
