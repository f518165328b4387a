//! What a usage record may say: how many tokens one call can use, and when it can have
//! happened. A record outside these bounds is refused at the edge, so no record in the log can
//! overflow a sum or rewrite a month whose quota is closed.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};

/// The most tokens one call may report, in or out: far above any model's context (a million
/// tokens today), far below what sums of many calls can overflow.
pub const MAX_TOKENS_PER_CALL: u64 = 1_000_000_000;

/// How far a reporter's clock may be off from keyledger's.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);

/// Why a reported call's time is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportedAtError {
    #[error("at is in the future (more than {} minutes from now)", CLOCK_SKEW.num_minutes())]
    Future,
    #[error("at is before this month: a closed month's usage cannot change")]
    ClosedMonth,
}

/// Checks that a call reported as made `at` could have been made this month by a clock at
/// most [`CLOCK_SKEW`] off from `now` (a call at 23:59 on the last day, reported a minute
/// into the next month, still counts).
///
/// # Errors
/// [`ReportedAtError`] saying which way it is out.
pub fn check_reported_at(at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), ReportedAtError> {
    if at > now + CLOCK_SKEW {
        return Err(ReportedAtError::Future);
    }
    let month_start =
        Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().unwrap_or(now);
    if at < month_start - CLOCK_SKEW {
        return Err(ReportedAtError::ClosedMonth);
    }
    Ok(())
}

/// `tokens` as reported, or [`MAX_TOKENS_PER_CALL`] if it is more; and whether it was more.
#[must_use]
pub fn capped(tokens: u64) -> (u64, bool) {
    if tokens > MAX_TOKENS_PER_CALL {
        (MAX_TOKENS_PER_CALL, true)
    } else {
        (tokens, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("an instant")
    }

    #[test]
    fn a_call_this_month_or_a_little_ahead_is_taken() {
        let now = at("2026-12-15T12:00:00Z");
        for ok in ["2026-12-15T12:00:00Z", "2026-12-01T00:00:00Z", "2026-12-15T12:04:00Z"] {
            assert_eq!(check_reported_at(at(ok), now), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_call_in_a_closed_month_or_the_future_is_refused() {
        let now = at("2026-12-15T12:00:00Z");
        assert_eq!(
            check_reported_at(at("2026-11-30T23:00:00Z"), now),
            Err(ReportedAtError::ClosedMonth)
        );
        assert_eq!(
            check_reported_at(at("2026-12-15T12:06:00Z"), now),
            Err(ReportedAtError::Future)
        );
    }

    #[test]
    fn the_last_minute_of_a_month_still_counts_just_after_it() {
        let now = at("2027-01-01T00:01:00Z");
        assert_eq!(check_reported_at(at("2026-12-31T23:59:00Z"), now), Ok(()));
    }

    #[test]
    fn figures_over_the_bound_are_capped_and_say_so() {
        assert_eq!(capped(12), (12, false));
        assert_eq!(capped(u64::MAX), (MAX_TOKENS_PER_CALL, true));
    }
}
