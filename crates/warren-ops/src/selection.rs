//! Which dead letters an action takes: the selection as an operator gives it (steps, job, error
//! pattern, age, failure group, limit), parsed and checked before anything moves.

use std::sync::Arc;

use crate::{
    OpsError,
    dlq::{ErrorMatcher, Filter},
};

/// A selection of dead letters. Empty fields select everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only these steps (empty: every registered step).
    pub steps: Vec<String>,
    /// Only this job.
    pub job: Option<String>,
    /// Only errors matching this regular expression.
    pub error: Option<String>,
    /// Only dead letters from this recent window (`90s`, `30m`, `2h`, `7d`).
    pub since: Option<String>,
    /// Only this failure group (a prefix is enough).
    pub group: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl Selection {
    /// Whether nothing narrows the selection: every dead letter of every step.
    pub fn is_everything(&self) -> bool {
        self.steps.is_empty()
            && self.job.is_none()
            && self.error.is_none()
            && self.since.is_none()
            && self.group.is_none()
            && self.limit.is_none()
    }

    /// The dead-letter filter, or a usage error naming the flag that is wrong.
    pub fn filter(&self) -> Result<Filter, OpsError> {
        let regex = self.error.as_deref().map(regex::Regex::new).transpose().map_err(|e| {
            OpsError::usage(format!("--error: {}", e.to_string().lines().last().unwrap_or("bad regex")))
        })?;
        let since_ms = self
            .since
            .as_deref()
            .map(|s| parse_age(s).map_err(|e| OpsError::usage(format!("--since: {e}"))))
            .transpose()?
            .map(|age| warren::envelope::now_ms().saturating_sub(age));
        if self.group.as_deref().is_some_and(|g| g.trim().is_empty()) {
            return Err(OpsError::usage("--group: give a group id from `warren dlq groups`"));
        }
        if let Some(job) = &self.job {
            job.parse::<uuid::Uuid>()
                .map_err(|_| OpsError::usage(format!("--job: `{job}` is not a job id (a UUID)")))?;
        }
        Ok(Filter {
            job: self.job.clone(),
            error_contains: None,
            since_ms,
            error_matches: regex.map(|r| Arc::new(move |e: &str| r.is_match(e)) as ErrorMatcher),
            group: self.group.clone(),
            ids: None,
        })
    }

    /// The selection as a command line gives it, for the record (`--step train --group 3fa2c1`).
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.steps.iter().map(|s| format!("--step {s}")).collect();
        let flags =
            [("--job", &self.job), ("--error", &self.error), ("--since", &self.since), ("--group", &self.group)];
        parts.extend(flags.iter().filter_map(|(flag, v)| v.as_ref().map(|v| format!("{flag} {v}"))));
        if let Some(n) = self.limit {
            parts.push(format!("--limit {n}"));
        }
        parts.join(" ")
    }
}

/// `90s`, `30m`, `2h`, `7d` in milliseconds.
pub fn parse_age(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not an age such as 90s, 30m, 2h or 7d");
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (n, unit) = text.split_at(digits);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(ms).ok_or_else(bad)
}

/// `50/s` (or `50`) as messages per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    text.trim_end_matches("/s")
        .parse::<f64>()
        .ok()
        .filter(|r| r.is_finite() && *r > 0.0)
        .ok_or_else(|| format!("`{text}` is not a rate such as 50/s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_rates_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(parse_age("90s"), Ok(90_000));
        assert_eq!(parse_age("2h"), Ok(7_200_000));
        assert_eq!(parse_age("7d"), Ok(604_800_000));
        for bad in ["", "h", "5w", "1.5h", "-3m", "99999999999999999999d"] {
            assert!(parse_age(bad).unwrap_err().contains("90s, 30m"), "{bad}");
        }
        assert_eq!(parse_rate("50/s"), Ok(50.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0/s").is_err() && parse_rate("fast").is_err());
    }

    #[test]
    fn a_selection_describes_itself_as_flags_and_knows_when_it_is_everything() {
        assert!(Selection::default().is_everything());
        let s = Selection {
            steps: vec!["train".into()],
            group: Some("3fa2c1".into()),
            limit: Some(5),
            ..Default::default()
        };
        assert!(!s.is_everything());
        assert_eq!(s.describe(), "--step train --group 3fa2c1 --limit 5");
    }

    #[test]
    fn a_bad_flag_is_a_usage_error_naming_it() {
        let cases = [
            (Selection { error: Some("row (".into()), ..Default::default() }, "--error"),
            (Selection { since: Some("yesterday".into()), ..Default::default() }, "--since"),
            (Selection { group: Some(" ".into()), ..Default::default() }, "--group"),
            (Selection { job: Some("42".into()), ..Default::default() }, "--job"),
        ];
        for (s, flag) in cases {
            let e = s.filter().unwrap_err();
            assert!(e.is_usage() && e.to_string().starts_with(flag), "{e}");
        }
        let f = Selection { error: Some(r"row \d+".into()), ..Default::default() }.filter().unwrap();
        assert!(f.error_matches.is_some_and(|m| m("row 17 is bad") && !m("column x")));
    }
}
