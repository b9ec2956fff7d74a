//! Validation problems, each tied to the field it is about.

use serde::Serialize;
use std::fmt;

/// One thing wrong with a piece of configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Where the problem is, as a field path such as `routes[2].paths[0]`.
    pub path: String,
    /// What is wrong, in words a user can act on.
    pub message: String,
    /// The line in the source document, when the problem came from a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{} (line {}): {}", self.path, line, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in one validation pass. Validation never stops at the first problem,
/// so a user sees everything that needs fixing at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// The longest duration any setting accepts, one day: longer is surely a mistake.
pub const MAX_MS: u64 = 86_400_000;

impl Problems {
    /// Checks a duration setting: at least `min` milliseconds, at most [`MAX_MS`].
    pub(crate) fn check_ms(&mut self, path: impl Into<String>, value: u64, min: u64) {
        if !(min..=MAX_MS).contains(&value) {
            self.push(path, format!("must be between {min} and {MAX_MS} milliseconds"));
        }
    }

    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { path: path.into(), message: message.into(), line: None });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was found, otherwise `Err(self)`.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// Makes paths under `prefix` relative to it (`routes[3].paths[0]` → `paths[0]` for
    /// `routes[3]`), for reporting problems of one entity to whoever wrote just that entity.
    pub fn relative_to(self, prefix: &str) -> Problems {
        let nested = format!("{prefix}.");
        Problems(
            self.0
                .into_iter()
                .map(|p| {
                    let path = if p.path == prefix {
                        String::new()
                    } else {
                        p.path.strip_prefix(&nested).map(str::to_owned).unwrap_or(p.path)
                    };
                    Problem { path, ..p }
                })
                .collect(),
        )
    }

    /// Prefixes every path with `prefix`, e.g. `name` becomes `services[3].name`.
    pub fn nest(self, prefix: &str) -> Problems {
        Problems(
            self.0
                .into_iter()
                .map(|p| Problem {
                    path: if p.path.is_empty() { prefix.to_owned() } else { format!("{prefix}.{}", p.path) },
                    ..p
                })
                .collect(),
        )
    }
}
