//! Who acts and why. Every operator action carries an [`Audit`], and one rule decides when a
//! reason is required, for the command line and the console alike.

use crate::OpsError;

/// An action touching more than this many messages needs a reason.
pub const HANDFUL: usize = 10;

/// A reason must say something: at least this many letters or digits.
pub const MIN_REASON_CHARS: usize = 3;

/// Who is acting and why; recorded with the action (`warren dlq history`, the console).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// `user@host`, or what the operator said (`--actor`).
    pub actor: String,
    /// Why, if given (a blank reason counts as none).
    pub reason: Option<String>,
}

impl Audit {
    /// An audit for `actor` (default: `$USER@host`) and `reason`.
    pub fn new(actor: Option<String>, reason: Option<String>) -> Self {
        let actor = actor.filter(|a| !a.trim().is_empty()).unwrap_or_else(default_actor);
        Self { actor, reason: reason.filter(|r| !r.trim().is_empty()) }
    }

    /// The reason rule: a reason given must say something, and one is required when an action
    /// touches more than [`HANDFUL`] messages. `verb` names the action in the refusal
    /// (`replaying`, `purging`).
    pub fn check(&self, verb: &str, count: usize) -> Result<(), OpsError> {
        if let Some(r) = &self.reason {
            if r.chars().filter(|c| c.is_alphanumeric()).count() < MIN_REASON_CHARS {
                return Err(OpsError::usage(format!(
                    "the reason `{r}` says nothing: give at least {MIN_REASON_CHARS} letters or digits"
                )));
            }
        } else if count > HANDFUL {
            return Err(OpsError::usage(format!(
                "{verb} {count} messages needs a reason (--reason \"…\"): more than {HANDFUL} are touched, and \
                 it is recorded in `warren dlq history`"
            )));
        }
        Ok(())
    }
}

/// `$USER@host` (or `$LOGNAME@host`).
pub fn default_actor() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", warren::broker::hostname())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(reason: Option<&str>) -> Audit {
        Audit::new(Some("dave".into()), reason.map(str::to_owned))
    }

    #[test]
    fn a_handful_needs_no_reason_more_does() {
        assert!(audit(None).check("replaying", HANDFUL).is_ok());
        let e = audit(None).check("replaying", HANDFUL + 1).unwrap_err();
        assert!(e.is_usage() && e.to_string().contains("replaying 11 messages needs a reason"), "{e}");
        assert!(audit(Some("the data root is back")).check("replaying", 10_000).is_ok());
    }

    #[test]
    fn a_blank_reason_is_none_and_an_empty_one_is_refused() {
        assert_eq!(audit(Some("   ")).reason, None);
        assert!(audit(Some("   ")).check("purging", HANDFUL + 1).is_err());
        let e = audit(Some("..")).check("purging", 1).unwrap_err();
        assert!(e.to_string().contains("says nothing"), "{e}");
    }

    #[test]
    fn the_actor_defaults_to_user_at_host() {
        let a = Audit::new(None, None);
        assert!(a.actor.contains('@'), "{}", a.actor);
        assert_eq!(Audit::new(Some("  ".into()), None).actor, a.actor);
    }
}
