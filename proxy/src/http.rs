//! The HTTP side of `metrics_listen`: Prometheus' `/metrics`, and probes
//! for Kubernetes and load balancers (`/health`, `/ready`, and
//! `/primary` / `/replica` in Patroni's sense, for HAProxy in front of
//! several pgsplit instances). HTTP/1.0 and 1.1, one request per
//! connection: the probes and scrapers that call it expect no more.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::lifecycle::State;
use crate::shared::{Core, LagLimit, Shared};

/// A request head larger than this is refused: nothing legitimate sends
/// more to these endpoints.
const MAX_HEAD: usize = 8 << 10;
/// A client that has not sent its request head within this is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(listener: TcpListener, core: Weak<Core>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors: the proxy's clients matter more.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if core.strong_count() == 0 {
            return;
        }
        tokio::spawn(answer(stream, core.clone()));
    }
}

async fn answer(mut stream: TcpStream, core: Weak<Core>) {
    let Ok(head) = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await else {
        return;
    };
    let reply = match (&head, core.upgrade().and_then(|c| c.current())) {
        (Some(head), Some(s)) => respond(&s, head),
        (Some(_), None) => Reply::text(503, "pgsplit is stopping\n"),
        (None, _) => Reply::text(400, "malformed request\n"),
    };
    let head_only = head.is_some_and(|h| h.starts_with("HEAD "));
    // A client that does not read is not waited for past the timeout.
    let _ = tokio::time::timeout(READ_TIMEOUT, async {
        stream.write_all(&reply.encode(head_only)).await?;
        stream.shutdown().await
    })
    .await;
}

/// The request head (request line and headers), or None if it is not
/// one within [`MAX_HEAD`].
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() + n > MAX_HEAD {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(buf).ok()
}

pub struct Reply {
    status: u16,
    content_type: &'static str,
    allow: bool,
    body: String,
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            allow: false,
            body: body.into(),
        }
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn body(&self) -> &str {
        &self.body
    }

    fn encode(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            _ => "Service Unavailable",
        };
        let allow = if self.allow {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// What a request head gets.
pub fn respond(s: &Arc<Shared>, head: &str) -> Reply {
    let mut words = head.lines().next().unwrap_or("").split_ascii_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Reply::text(400, "malformed request line\n");
    };
    let path = target.split('?').next().unwrap_or(target);
    let known = ["/metrics", "/health", "/ready", "/primary", "/replica"];
    if !known.contains(&path) {
        return Reply::text(
            404,
            format!("no such endpoint: {path}; try {}\n", known.join(", ")),
        );
    }
    if method != "GET" && method != "HEAD" {
        let mut r = Reply::text(405, format!("{path} takes GET or HEAD, not {method}\n"));
        r.allow = true;
        return r;
    }
    match path {
        "/metrics" => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            allow: false,
            body: crate::metrics::render(s),
        },
        "/health" => Reply::text(200, format!("alive, {}\n", s.lifecycle.state().as_str())),
        "/ready" => probe(ready(s)),
        "/primary" => probe(primary(s)),
        _ => probe(replica(s)),
    }
}

fn probe(verdict: Result<String, String>) -> Reply {
    match verdict {
        Ok(why) => Reply::text(200, why + "\n"),
        Err(why) => Reply::text(503, why + "\n"),
    }
}

/// Ready to take clients: running, a primary known, and some server that
/// can take a read.
fn ready(s: &Shared) -> Result<String, String> {
    match s.lifecycle.state() {
        State::Running => {}
        State::Paused => return Err("paused (PGSPLIT PAUSE): requests wait".into()),
        _ => return Err("shutting down".into()),
    }
    let writer = primary(s)?;
    let lag = LagLimit::from_config(&s.config.health);
    if s.peek_reader(&[], 0, lag).is_none() {
        return Err("no server can take reads".into());
    }
    Ok(format!("ready: {writer}"))
}

/// Writes can be routed: a primary is known and in service.
fn primary(s: &Shared) -> Result<String, String> {
    let Some(p) = s.primary() else {
        return Err("no primary: writes wait for one".into());
    };
    let b = &s.topology.backends[p];
    if !s.topology.is_usable(p) || b.node.is_detached() {
        return Err(format!("primary {} is not in service", b.name()));
    }
    Ok(format!("primary {}", b.name()))
}

/// Reads can go to a replica within the lag limit.
fn replica(s: &Shared) -> Result<String, String> {
    let lag = LagLimit::from_config(&s.config.health);
    let readable: Vec<&str> = s
        .topology
        .backends
        .iter()
        .filter(|b| s.standby_readable(b.id, 0, lag))
        .map(|b| b.name())
        .collect();
    if readable.is_empty() {
        return Err("no replica can take reads".into());
    }
    Ok(format!("replicas {}", readable.join(", ")))
}
