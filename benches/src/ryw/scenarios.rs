//! Each scenario's pgbench runs, bracketed by two scrapes of pgsplit's
//! metrics.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::clients::{Client, ClientRun, Endpoint};
use super::metrics::{scrape, Delta};
use super::setup::OTHER_USER;
use super::Scenario;

/// An autocommit INSERT of a fresh row, then a read of it that must find it.
/// The `\gset` is what stops the client when the row is not there.
const OWN_WRITES: &str = "\\set id random(1, 2000000000)\n\
    INSERT INTO ryw_probe (id, v) VALUES (:id, 1) ON CONFLICT (id) DO NOTHING;\n\
    SELECT v FROM ryw_probe WHERE id = :id \\gset\n";

/// The same write committed in a transaction, then read in a read-only
/// transaction, which pgsplit may send to a replica as a whole.
const RO_AFTER_RW: &str = "\\set id random(1, 2000000000)\n\
    BEGIN;\n\
    INSERT INTO ryw_probe (id, v) VALUES (:id, 1) ON CONFLICT (id) DO NOTHING;\n\
    COMMIT;\n\
    BEGIN READ ONLY;\n\
    SELECT v FROM ryw_probe WHERE id = :id \\gset\n\
    COMMIT;\n";

/// What the scenarios share within one pgsplit.
pub struct Ctx<'a> {
    pub endpoint: &'a Endpoint,
    pub superuser: &'a str,
    pub metrics: SocketAddr,
    pub seconds: u32,
}

/// One scenario in one mode.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    pub mode: String,
    pub scenario: Scenario,
    pub delta: Delta,
    pub clients: Vec<ClientRun>,
}

impl ScenarioResult {
    pub fn client(&self, role: &str) -> Option<&ClientRun> {
        self.clients.iter().find(|c| c.role == role)
    }

    /// Reads that missed their client's own write: read-your-writes bugs.
    pub fn violations(&self) -> u64 {
        self.clients.iter().map(|c| c.violations).sum()
    }

    pub fn errors(&self) -> u64 {
        self.clients.iter().map(|c| c.errors).sum()
    }

    /// The TPS the scenario is about: the probe's, or the readers'.
    pub fn main_tps(&self) -> Option<f64> {
        let role = if self.scenario.probes() {
            "probe"
        } else {
            "readers"
        };
        self.client(role).and_then(|c| c.tps)
    }
}

/// Runs `scenario`'s clients at once for `ctx.seconds`.
pub fn run(ctx: &Ctx, mode: &str, scenario: Scenario) -> Result<ScenarioResult, String> {
    let clients = clients(ctx, scenario)?;
    let before = scrape(ctx.metrics)?;
    // Started one after another and awaited after: they overlap for all
    // but the few milliseconds a start takes. An error drops the started
    // ones, which kills them.
    let running = clients
        .into_iter()
        .map(|c| ctx.endpoint.start(c))
        .collect::<Result<Vec<_>, _>>()?;
    // The margin covers logins and a slow end; a hung pgsplit is not waited on.
    let timeout = Duration::from_secs(u64::from(ctx.seconds) + 60);
    let clients: Vec<ClientRun> = running.into_iter().map(|r| r.finish(timeout)).collect();
    let after = scrape(ctx.metrics)?;
    Ok(ScenarioResult {
        mode: mode.to_owned(),
        scenario,
        delta: Delta::between(&before, &after),
        clients,
    })
}

fn clients(ctx: &Ctx, scenario: Scenario) -> Result<Vec<Client>, String> {
    let superuser = ctx.superuser.to_owned();
    Ok(match scenario {
        Scenario::OwnWrites => vec![probe(ctx, "own_writes.sql", OWN_WRITES)?],
        Scenario::RoAfterRw => vec![probe(ctx, "ro_after_rw.sql", RO_AFTER_RW)?],
        Scenario::LoadSameUserReaders => vec![writers(ctx), readers(ctx, superuser)],
        Scenario::LoadOtherUserReaders => vec![writers(ctx), readers(ctx, OTHER_USER.into())],
    })
}

/// Four clients of a script that checks its own writes, as the superuser.
fn probe(ctx: &Ctx, file: &str, script: &str) -> Result<Client, String> {
    let path = ctx.endpoint.dir.join(file);
    write_script(&path, script)?;
    let mut args = timed(ctx, 2);
    args.extend(["-f".into(), path.display().to_string()]);
    Ok(Client {
        role: "probe",
        user: ctx.superuser.to_owned(),
        clients: 4,
        args,
    })
}

/// pgbench's tpcb-like script: every statement in a transaction, so all
/// of it counts as writes and the reads pgsplit counts are the readers'.
fn writers(ctx: &Ctx) -> Client {
    Client {
        role: "writers",
        user: ctx.superuser.to_owned(),
        clients: 2,
        args: timed(ctx, 1),
    }
}

/// `pgbench -S`: one primary-key SELECT per transaction, in autocommit.
fn readers(ctx: &Ctx, user: String) -> Client {
    let mut args = timed(ctx, 1);
    args.push("--select-only".into());
    Client {
        role: "readers",
        user,
        clients: 2,
        args,
    }
}

/// `-n`: the tables were vacuumed directly on the primary, and a vacuum
/// through pgsplit would count as writes.
fn timed(ctx: &Ctx, jobs: u32) -> Vec<String> {
    vec![
        "-n".into(),
        format!("--jobs={jobs}"),
        format!("--time={}", ctx.seconds),
    ]
}

fn write_script(path: &Path, script: &str) -> Result<(), String> {
    fs::write(path, script).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_read_back_what_they_wrote() {
        for script in [OWN_WRITES, RO_AFTER_RW] {
            assert!(script.starts_with("\\set id random(1, 2000000000)\n"));
            assert!(script.contains("VALUES (:id, 1)"));
            assert!(script.contains("WHERE id = :id \\gset\n"));
        }
        assert!(RO_AFTER_RW.contains("COMMIT;\nBEGIN READ ONLY;\n"));
    }
}
