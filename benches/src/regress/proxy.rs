//! pgsplit's configuration for the suite: the benchmark's backends, every
//! setting at its default but the pool mode, and users fit for a client
//! that creates its own roles.
//!
//! The suite logs in as the superuser and, with `\c`, as roles it has just
//! created with no password. The wildcard entry with `auth = "trust"`
//! takes any role and logs in to the servers as that role with no
//! password, which the servers trust (`ClusterOptions::trust_all`). The
//! superuser has an entry of its own, first, because health checks and WAL
//! position checks log in as the first entry with a password.

use std::fmt::Write;

use crate::e2e::configs::{backends_toml, toml_string, Layout};

pub fn pgsplit_toml(layout: &Layout, listen_port: u16, pool_mode: &str) -> String {
    let mut s = format!(
        "listen = \"127.0.0.1:{listen_port}\"\n\n[pool]\nmode = {}\n\n{}",
        toml_string(pool_mode),
        backends_toml(layout)
    );
    let _ = write!(
        s,
        "\n[[users]]\nname = {}\npassword = {}\nauth = \"trust\"\n\n\
         [[users]]\nname = \"*\"\nauth = \"trust\"\n",
        toml_string(&layout.user),
        toml_string(&layout.password)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superuser_first_then_the_trusted_wildcard() {
        let layout = Layout {
            primary_port: 5000,
            replica_ports: vec![5001, 5002],
            user: "postgres".into(),
            password: "postgres".into(),
            max_clients: 20,
            tls: None,
        };
        let toml = pgsplit_toml(&layout, 6000, "session");
        assert!(toml.starts_with("listen = \"127.0.0.1:6000\"\n\n[pool]\nmode = \"session\"\n"));
        assert_eq!(toml.matches("[[backends]]").count(), 3);
        assert!(toml.contains("port = 5002\nrole = \"replica\""));
        let users = toml.split_once("[[users]]").unwrap().1;
        assert!(users.starts_with("\nname = \"postgres\"\npassword = \"postgres\"\n"));
        assert!(users.ends_with("[[users]]\nname = \"*\"\nauth = \"trust\"\n"));
        // Nothing else: every other setting keeps pgsplit's default.
        assert!(!toml.contains("[routing]") && !toml.contains("pool_size"));
    }
}
