//! pgsplit's own commands, answered by the proxy instead of a server:
//! pgpool-style `SHOW pool_*` views and `PGSPLIT <verb> <node>` actions.
//!
//! Recognised by text before classification, so they work wherever a
//! statement can appear (inside transactions too) and never reach a
//! server that would reject them as unknown.

/// One admin command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    ShowPoolNodes,
    ShowPoolVersion,
    /// pgpool's settings view.
    ShowPoolStatus,
    /// pgpool's view of pooled server connections.
    ShowPoolPools,
    /// Take a node out of service until attached again.
    Detach(String),
    Attach(String),
    /// Make a standby the primary (a switchover when the primary is up).
    Promote(String),
    /// Take a server that says it is primary as the primary, forgetting
    /// the timelines and cluster followed before.
    Accept(String),
    /// New requests wait and running transactions finish, then server
    /// connections are closed (PgBouncer's PAUSE).
    Pause,
    Resume,
    /// Shut down in phases, as on SIGTERM.
    Shutdown,
    /// Read the configuration again and apply it.
    Reload,
}

impl AdminCommand {
    /// Changes the cluster: only admin users may run it.
    pub fn needs_admin(&self) -> bool {
        // pool_status and pool_pools show the whole configuration and
        // every server connection: admins only.
        !matches!(
            self,
            AdminCommand::ShowPoolNodes | AdminCommand::ShowPoolVersion
        )
    }

    /// The CommandComplete tag of an action.
    pub fn tag(&self) -> &'static str {
        match self {
            AdminCommand::ShowPoolNodes
            | AdminCommand::ShowPoolVersion
            | AdminCommand::ShowPoolStatus
            | AdminCommand::ShowPoolPools => "SHOW",
            AdminCommand::Detach(_) => "PGSPLIT DETACH",
            AdminCommand::Attach(_) => "PGSPLIT ATTACH",
            AdminCommand::Promote(_) => "PGSPLIT PROMOTE",
            AdminCommand::Accept(_) => "PGSPLIT ACCEPT",
            AdminCommand::Pause => "PGSPLIT PAUSE",
            AdminCommand::Resume => "PGSPLIT RESUME",
            AdminCommand::Shutdown => "PGSPLIT SHUTDOWN",
            AdminCommand::Reload => "PGSPLIT RELOAD",
        }
    }
}

/// `None`: not an admin command (leave it to the classifier). `Some(Err)`:
/// meant for pgsplit but malformed; the message says how to write it.
pub fn parse_admin(sql: &str) -> Option<Result<AdminCommand, String>> {
    let text = sql.trim().trim_end_matches(';').trim_end();
    let mut words = text.split_ascii_whitespace();
    let first = words.next()?;
    if first.eq_ignore_ascii_case("show") {
        let what = words.next()?;
        if words.next().is_some() {
            return None;
        }
        return if what.eq_ignore_ascii_case("pool_nodes") {
            Some(Ok(AdminCommand::ShowPoolNodes))
        } else if what.eq_ignore_ascii_case("pool_version") {
            Some(Ok(AdminCommand::ShowPoolVersion))
        } else if what.eq_ignore_ascii_case("pool_status") {
            Some(Ok(AdminCommand::ShowPoolStatus))
        } else if what.eq_ignore_ascii_case("pool_pools") {
            Some(Ok(AdminCommand::ShowPoolPools))
        } else {
            None
        };
    }
    if !first.eq_ignore_ascii_case("pgsplit") {
        return None;
    }
    let usage = "write it as PGSPLIT DETACH|ATTACH|PROMOTE|ACCEPT <node name or node_id>, \
                 or PGSPLIT PAUSE|RESUME|SHUTDOWN|RELOAD";
    let verb = words.next();
    let whole = |cmd| Some(Ok(cmd));
    match (
        verb.map(str::to_ascii_lowercase).as_deref(),
        words.clone().next(),
    ) {
        (Some("pause"), None) => return whole(AdminCommand::Pause),
        (Some("resume"), None) => return whole(AdminCommand::Resume),
        (Some("shutdown"), None) => return whole(AdminCommand::Shutdown),
        (Some("reload"), None) => return whole(AdminCommand::Reload),
        _ => {}
    }
    let (Some(verb), Some(node), None) = (verb, words.next(), words.next()) else {
        return Some(Err(format!("pgsplit: malformed admin command; {usage}")));
    };
    let node = node.trim_matches(|c| c == '\'' || c == '"').to_owned();
    Some(match verb.to_ascii_lowercase().as_str() {
        "detach" => Ok(AdminCommand::Detach(node)),
        "attach" => Ok(AdminCommand::Attach(node)),
        "promote" => Ok(AdminCommand::Promote(node)),
        "accept" => Ok(AdminCommand::Accept(node)),
        _ => Err(format!("pgsplit: unknown admin command {verb:?}; {usage}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_views_in_any_case_with_or_without_semicolon() {
        assert_eq!(
            parse_admin("SHOW pool_nodes"),
            Some(Ok(AdminCommand::ShowPoolNodes))
        );
        assert_eq!(
            parse_admin("  show POOL_NODES ;\n"),
            Some(Ok(AdminCommand::ShowPoolNodes))
        );
        assert_eq!(
            parse_admin("show pool_version;"),
            Some(Ok(AdminCommand::ShowPoolVersion))
        );
        assert_eq!(
            parse_admin("SHOW pool_status"),
            Some(Ok(AdminCommand::ShowPoolStatus))
        );
        assert_eq!(
            parse_admin("show POOL_POOLS"),
            Some(Ok(AdminCommand::ShowPoolPools))
        );
    }

    #[test]
    fn ordinary_statements_are_left_alone() {
        for sql in [
            "SHOW search_path",
            "SHOW pool_nodes_x",
            "SHOW ALL",
            "select 1",
            "SHOW pool_nodes extra",
            "",
            "pgsplitx detach a",
        ] {
            assert_eq!(parse_admin(sql), None, "{sql}");
        }
    }

    #[test]
    fn actions_name_a_node_by_name_or_number() {
        assert_eq!(
            parse_admin("PGSPLIT DETACH replica1"),
            Some(Ok(AdminCommand::Detach("replica1".into())))
        );
        assert_eq!(
            parse_admin("pgsplit attach 2;"),
            Some(Ok(AdminCommand::Attach("2".into())))
        );
        assert_eq!(
            parse_admin("pgsplit promote 'node-1'"),
            Some(Ok(AdminCommand::Promote("node-1".into())))
        );
        assert!(AdminCommand::Promote(String::new()).needs_admin());
        assert!(!AdminCommand::ShowPoolNodes.needs_admin());
    }

    #[test]
    fn pause_resume_and_shutdown_take_no_node() {
        assert_eq!(parse_admin("PGSPLIT PAUSE"), Some(Ok(AdminCommand::Pause)));
        assert_eq!(
            parse_admin("pgsplit resume;"),
            Some(Ok(AdminCommand::Resume))
        );
        assert_eq!(
            parse_admin("pgsplit Shutdown"),
            Some(Ok(AdminCommand::Shutdown))
        );
        assert!(parse_admin("pgsplit pause node1").unwrap().is_err());
        assert_eq!(
            parse_admin("pgsplit reload"),
            Some(Ok(AdminCommand::Reload))
        );
        assert!(AdminCommand::Pause.needs_admin() && AdminCommand::Reload.needs_admin());
    }

    #[test]
    fn malformed_actions_explain_the_syntax() {
        for sql in [
            "PGSPLIT",
            "pgsplit detach",
            "pgsplit frobnicate x",
            "pgsplit detach a b",
        ] {
            let err = parse_admin(sql).unwrap().unwrap_err();
            assert!(
                err.contains("PGSPLIT DETACH|ATTACH|PROMOTE"),
                "{sql}: {err}"
            );
        }
    }
}
