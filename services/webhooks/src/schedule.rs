//! When to try again. Pure.

use std::time::Duration;

/// Seconds after each failure: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
pub const DEFAULT_SCHEDULE: &[f64] = &[5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0];
/// A receiver's `Retry-After` is honoured up to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(6 * 3600);

/// The delay before attempt `attempts + 1`, or `None` when the schedule is spent.
/// `jitter` in [-1, 1] spreads retries ±20 %; `retry_after` is the receiver's
/// request, taken when it is positive and within `MAX_RETRY_AFTER`.
pub fn next_delay(schedule: &[f64], attempts: u32, jitter: f64, retry_after: Option<Duration>) -> Option<Duration> {
    let base = *schedule.get(attempts.checked_sub(1)? as usize)?;
    if let Some(ra) = retry_after.filter(|ra| !ra.is_zero() && *ra <= MAX_RETRY_AFTER) {
        return Some(ra);
    }
    Some(Duration::from_secs_f64(base * (1.0 + 0.2 * jitter.clamp(-1.0, 1.0))))
}

/// `Retry-After` as seconds (the HTTP-date form is not honoured).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

pub fn parse_schedule(s: &str) -> Result<Vec<f64>, String> {
    let v: Result<Vec<f64>, _> = s.split(',').map(|x| x.trim().parse::<f64>()).collect();
    match v {
        Ok(v) if !v.is_empty() && v.len() <= 20 && v.iter().all(|x| x.is_finite() && *x >= 0.0) => Ok(v),
        _ => Err("a comma-separated list of 1-20 non-negative seconds".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_schedule_then_gives_up() {
        let s = DEFAULT_SCHEDULE;
        assert_eq!(next_delay(s, 1, 0.0, None), Some(Duration::from_secs(5)));
        assert_eq!(next_delay(s, 2, 0.0, None), Some(Duration::from_secs(300)));
        assert_eq!(next_delay(s, 7, 0.0, None), Some(Duration::from_secs(36000)));
        assert_eq!(next_delay(s, 8, 0.0, None), None, "eight attempts in all, then dead");
        assert_eq!(next_delay(s, 0, 0.0, None), None);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        assert_eq!(next_delay(DEFAULT_SCHEDULE, 2, 1.0, None), Some(Duration::from_secs(360)));
        assert_eq!(next_delay(DEFAULT_SCHEDULE, 2, -1.0, None), Some(Duration::from_secs(240)));
        assert_eq!(next_delay(DEFAULT_SCHEDULE, 2, 7.0, None), Some(Duration::from_secs(360)));
    }

    #[test]
    fn retry_after_within_bounds() {
        let ra = |s| Some(Duration::from_secs(s));
        assert_eq!(next_delay(DEFAULT_SCHEDULE, 1, 0.0, ra(60)), ra(60));
        assert_eq!(next_delay(DEFAULT_SCHEDULE, 1, 0.0, ra(86400)), ra(5), "beyond the bound: the schedule");
        assert_eq!(next_delay(DEFAULT_SCHEDULE, 1, 0.0, ra(0)), ra(5));
        assert_eq!(parse_retry_after(" 120 "), ra(120));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn schedules_from_config() {
        assert_eq!(parse_schedule("0.1, 2").unwrap(), [0.1, 2.0]);
        assert!(parse_schedule("").is_err());
        assert!(parse_schedule("1,-2").is_err());
    }
}
