//! Layering (defaults, file, env) and turning figment's errors into lines
//! that name the key and the exact file or environment variable to fix.

use std::path::Path;

use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;
use figment::{Figment, Metadata, Source};

use crate::{Config, ConfigError};

const ENV_PREFIX: &str = "PGSPLIT_";
/// `PGSPLIT_*` names the binary uses for itself; without this, strict
/// unknown-key checking would reject them as configuration keys.
const ENV_RESERVED: &[&str] = &["config", "log"];

pub(crate) fn figment(path: Option<&Path>) -> Figment {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = path {
        // `file_exact`: `Toml::file` would search parent directories for a
        // relative path and silently skip a missing file, and an operator who
        // names a file wants that file or an error.
        figment = figment.merge(Toml::file_exact(path));
    }
    figment.merge(env())
}

/// Whether the file at `path` or the environment sets `key` (a default
/// does not count).
pub(crate) fn sets(path: Option<&Path>, key: &str) -> bool {
    let mut given = Figment::new();
    if let Some(path) = path {
        given = given.merge(Toml::file_exact(path));
    }
    given.merge(env()).find_value(key).is_ok()
}

fn env() -> Env {
    Env::prefixed(ENV_PREFIX).split("__").ignore(ENV_RESERVED)
}

pub(crate) fn extract(figment: &Figment) -> Result<Config, ConfigError> {
    figment.extract::<Config>().map_err(|errors| {
        let lines: Vec<String> = errors.into_iter().map(|e| describe(figment, e)).collect();
        ConfigError::Load(lines.join("\n"))
    })
}

/// `<key>: <what is wrong> (<where it was set>); <how to fix>`.
fn describe(figment: &Figment, error: figment::Error) -> String {
    // figment's path already ends with an unknown field's name, but stops
    // at the enclosing table for a missing one.
    let mut path = error.path.clone();
    let (what, fix) = match &error.kind {
        Kind::UnknownField(_, expected) => (
            "unknown key".to_string(),
            format!("remove it or fix the spelling ({})", one_of(expected)),
        ),
        Kind::MissingField(field) => {
            path.push(field.to_string());
            ("missing".to_string(), "this key is required".to_string())
        }
        Kind::UnknownVariant(found, expected) => {
            (format!("unknown value {found:?}"), one_of(expected))
        }
        Kind::InvalidType(found, expected) | Kind::InvalidValue(found, expected) => (
            format!("expected {}, found {found}", plain(expected)),
            how_to_write(expected),
        ),
        other => (other.to_string(), String::new()),
    };
    let origin = metadata_of(figment, &path)
        .or(error.metadata.as_ref())
        .map(|md| origin(md, &path));
    let mut line = String::new();
    if path.is_empty() {
        // Not about one key: an unreadable file or a syntax error, whose
        // message (with line and column) is the whole story.
        if let Some(origin) = origin {
            line.push_str(&origin);
            line.push_str(": ");
        }
        line.push_str(what.trim_end());
    } else {
        line.push_str(&render_key(&path));
        line.push_str(": ");
        line.push_str(&what);
        if let Some(origin) = origin {
            line.push_str(&format!(" ({origin})"));
        }
    }
    if !fix.is_empty() {
        line.push_str("; ");
        line.push_str(&fix);
    }
    line
}

/// serde names integer types the way Rust does; operators think in ranges.
fn plain(expected: &str) -> String {
    match expected {
        "u16" => "an integer from 0 to 65535".into(),
        "u32" => "an integer from 0 to 4294967295".into(),
        "u64" | "usize" => "a non-negative integer".into(),
        other => other.into(),
    }
}

fn how_to_write(expected: &str) -> String {
    if expected.contains("duration") {
        "write a quoted duration such as \"5s\", \"250ms\" or \"1m 30s\"".into()
    } else {
        format!("set it to {}", plain(expected))
    }
}

fn one_of(expected: &[&str]) -> String {
    match expected {
        [] => "nothing is accepted here".to_string(),
        _ => format!("valid here: {}", expected.join(", ")),
    }
}

/// `["backends", "1", "port"]` -> `backends[1].port`, matching the keys used
/// by validation problems.
fn render_key(path: &[String]) -> String {
    let mut key = String::new();
    for segment in path {
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            key.push_str(&format!("[{segment}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(segment);
        }
    }
    key
}

/// Which provider set the value at `path`. figment's own lookup cannot step
/// into arrays, and the metadata it attaches to an unknown-field error is
/// that of the enclosing table (often the defaults), so walk the merged value.
fn metadata_of<'a>(figment: &'a Figment, path: &[String]) -> Option<&'a Metadata> {
    let (first, rest) = path.split_first()?;
    let mut value = figment.find_value(first).ok()?;
    for segment in rest {
        value = match value {
            Value::Dict(_, mut dict) => dict.remove(segment)?,
            Value::Array(_, mut items) => {
                let index: usize = segment.parse().ok()?;
                (index < items.len()).then(|| items.swap_remove(index))?
            }
            _ => return None,
        };
    }
    figment.get_metadata(value.tag())
}

fn origin(md: &Metadata, path: &[String]) -> String {
    match &md.source {
        Some(Source::File(file)) if path.is_empty() => format!("config file {}", file.display()),
        Some(Source::File(file)) => format!("in {}", file.display()),
        _ if md.name.contains("environment variable") => {
            // Env vars cannot index into arrays: a value under `backends.0`
            // came from PGSPLIT_BACKENDS holding an inline array.
            let var: Vec<String> = path
                .iter()
                .take_while(|s| !s.bytes().all(|b| b.is_ascii_digit()))
                .map(|s| s.to_ascii_uppercase())
                .collect();
            format!("from environment variable {ENV_PREFIX}{}", var.join("__"))
        }
        _ => format!("from {}", md.name),
    }
}
