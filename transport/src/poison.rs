//! A link's first fatal error. Once a link has failed (peer gone, protocol broken, timeout),
//! every later call on it returns that same error, so a collective that retries or another
//! thread that holds the link learns the original cause, not a secondary one. Every backend keeps
//! one [`Poison`] and checks it at the top of each [`crate::Link`] call; the outbox of the
//! byte-stream backends keeps one for its writer thread's first error.

use crate::error::{Error, Result};

/// The first error of a link, if any.
#[derive(Debug, Default)]
pub(crate) struct Poison(Option<Error>);

impl Poison {
    /// `Err(first error)` once poisoned, `Ok(())` before.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.0 {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Whether the link has failed.
    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Record `e` as the link's error unless one is recorded already (the first is logged, naming
    /// `peer`); returns the recorded (first) error.
    pub(crate) fn set(&mut self, peer: &str, e: Error) -> Error {
        if self.0.is_none() {
            tracing::warn!(peer, error = %e, "closing link");
        }
        self.0.get_or_insert(e).clone()
    }

    /// Record `e` without logging (links whose failures are expected, such as in-process ones).
    pub(crate) fn set_quiet(&mut self, e: Error) -> Error {
        self.0.get_or_insert(e).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ConfigError;

    #[test]
    fn keeps_the_first_error() {
        let err = |addr: &str| Error::from(ConfigError::AddressEmpty { addr: addr.into() });
        let first = err("first").to_string();
        let mut p = Poison::default();
        assert!(p.check().is_ok() && !p.is_set());
        assert_eq!(p.set("n1", err("first")).to_string(), first);
        assert_eq!(p.set("n1", err("second")).to_string(), first);
        assert_eq!(p.check().unwrap_err().to_string(), first);
        assert!(p.is_set());
    }
}
