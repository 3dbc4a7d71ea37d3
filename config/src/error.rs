//! Configuration errors, shaped for an operator reading a terminal: one line
//! per problem, each naming the key, what is wrong and how to fix it.

use std::fmt;

/// Why a configuration could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The layers could not be read or did not fit the schema: unreadable or
    /// malformed file, unknown key, wrong type, bad duration. The message
    /// names each key and where it came from (file path or env var), one per line.
    #[error("{0}")]
    Load(String),
    /// The configuration parsed but breaks cross-field rules; every problem
    /// found is listed, not only the first.
    #[error("{}", Lines(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`]; empty for load errors,
    /// whose cause is already in the message.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => problems,
            ConfigError::Load(_) => &[],
        }
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Path of the offending key as an operator would write it, e.g.
    /// `backends[1].port`.
    pub key: String,
    /// `<what is wrong>; <what would fix it>`.
    pub message: String,
}

impl Problem {
    /// Builds a problem for `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

struct Lines<'a>(&'a [Problem]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_displays_one_line_per_problem() {
        let err = ConfigError::Invalid(vec![
            Problem::new("listen", "bad; fix it"),
            Problem::new("backends[1].port", "zero; set it"),
        ]);
        assert_eq!(
            err.to_string(),
            "listen: bad; fix it\nbackends[1].port: zero; set it"
        );
        assert_eq!(err.problems().len(), 2);
    }
}
