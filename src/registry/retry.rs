//! The one retry policy every registry request goes through: which failures
//! are worth another attempt, how long to wait before it (exponential
//! backoff with jitter, a fixed delay the user chose, or the registry's
//! `Retry-After`), and how many attempts there are. It sends nothing and
//! prints nothing itself: the client runs its requests in [`Retry::run`],
//! and a callback hears each retry as a [`Retrying`] notice.

use std::fmt;
use std::time::{Duration, SystemTime};

use ureq::http::HeaderMap;

use super::{Error, Result};

/// Attempts after the first, by default: five in all, docker's
/// `max-download-attempts`.
pub const DEFAULT_RETRIES: u32 = 4;

/// The first backoff, doubled for every further retry.
pub const BASE_DELAY: Duration = Duration::from_secs(1);

/// No backoff, and no `Retry-After`, makes one wait longer than this.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// How requests are retried (`--retry`, `--retry-delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts after the first (`--retry N`; 0: none).
    pub retries: u32,
    /// A fixed wait between attempts instead of the exponential backoff
    /// (`--retry-delay`, as podman's and buildah's flag means it).
    pub delay: Option<Duration>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            retries: DEFAULT_RETRIES,
            delay: None,
        }
    }
}

/// What one attempt came to.
pub(super) enum Attempt<T> {
    /// It worked (or failed in a way no retry can help: that is an `Err`).
    Done(T),
    /// It failed in a way that may pass: try again.
    Again(Transient),
}

/// A failure worth another attempt.
pub(super) struct Transient {
    /// The error, returned when no attempt is left.
    pub error: Error,
    /// How long the registry asked us to wait (`Retry-After`).
    pub after: Option<Duration>,
}

impl Transient {
    /// A failure with no `Retry-After`.
    pub fn new(error: Error) -> Self {
        Transient { error, after: None }
    }
}

/// A retry about to happen, for the progress stream (one line each).
#[derive(Debug, Clone, Copy)]
pub struct Retrying<'a> {
    /// The request (`GET manifest team/app:1`, `upload of blob 0b0c8a6c1f4e`).
    pub what: &'a str,
    /// How long until it is sent again; `None`: at once, from scratch (a
    /// blob that did not match its digest).
    pub delay: Option<Duration>,
    /// Whether the delay is the registry's `Retry-After`.
    pub asked: bool,
    /// The attempt about to be made, and of how many.
    pub attempt: u32,
    /// Attempts in all.
    pub attempts: u32,
    /// What went wrong (`503 Service Unavailable`, `io: Peer disconnected`).
    pub reason: &'a str,
}

impl fmt::Display for Retrying<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.delay {
            Some(d) => write!(
                f,
                "retrying {} in {} ({}/{}{}): {}",
                self.what,
                human(d),
                self.attempt,
                self.attempts,
                if self.asked { ", Retry-After" } else { "" },
                self.reason
            ),
            None => write!(f, "retrying {} from scratch: {}", self.what, self.reason),
        }
    }
}

/// `350ms`, `1.5s`, `12s`.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        let tenths = (d.as_millis() + 50) / 100;
        if tenths % 10 == 0 || tenths >= 100 {
            format!("{}s", (tenths + 5) / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    }
}

impl Retry {
    /// Attempts in all.
    pub fn attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The wait before retry `n` (1 for the first), `unit` being a random
    /// draw in [0, 1): the fixed delay, else `BASE_DELAY · 2^(n-1)` capped at
    /// [`MAX_DELAY`], of which the upper half is jitter ("equal jitter": a
    /// fleet that failed together does not come back together, and no wait
    /// is shorter than half its backoff).
    fn backoff(&self, n: u32, unit: f64) -> Duration {
        if let Some(d) = self.delay {
            return d;
        }
        let full = BASE_DELAY
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(MAX_DELAY);
        full / 2 + (full / 2).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The wait before retry `n`: the registry's `Retry-After` when it gave
    /// one (capped at [`MAX_DELAY`]), else the backoff.
    fn wait(&self, n: u32, after: Option<Duration>) -> Duration {
        match after {
            Some(a) => a.min(MAX_DELAY),
            None => self.backoff(n, fastrand::f64()),
        }
    }

    /// Runs `attempt` until it is done, fails for good, or has been made
    /// [`Retry::attempts`] times; sleeps between attempts, telling `notice`
    /// first.
    ///
    /// # Errors
    /// The attempt's own error, or after the last attempt
    /// [`Error::GaveUp`] with the last transient failure.
    pub(super) fn run<T>(
        &self,
        what: &str,
        notice: &dyn Fn(&Retrying<'_>),
        mut attempt: impl FnMut() -> Result<Attempt<T>>,
    ) -> Result<T> {
        let attempts = self.attempts();
        let mut n = 0;
        loop {
            n += 1;
            let Transient { error, after } = match attempt()? {
                Attempt::Done(v) => return Ok(v),
                Attempt::Again(t) => t,
            };
            if n >= attempts {
                return Err(if attempts > 1 {
                    Error::GaveUp {
                        attempts,
                        last: Box::new(error),
                    }
                } else {
                    error
                });
            }
            let delay = self.wait(n, after);
            notice(&Retrying {
                what,
                delay: Some(delay),
                asked: after.is_some(),
                attempt: n + 1,
                attempts,
                reason: &reason(&error),
            });
            std::thread::sleep(delay);
        }
    }
}

/// The short cause of a transient failure, for a notice.
fn reason(e: &Error) -> String {
    match e {
        Error::Status { status, .. } => status_line(*status),
        Error::Http { message, .. } => message.clone(),
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// `503 Service Unavailable`.
pub(super) fn status_line(status: u16) -> String {
    let reason = ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason());
    match reason {
        Some(r) => format!("{status} {r}"),
        None => status.to_string(),
    }
}

/// Whether an answer with this status may succeed if asked again: a
/// timeout, rate limiting, or a server error that is not "not implemented"
/// (RFC 9110 §15.5.9, §15.6; RFC 6585 §4). Auth and not-found answers are
/// final.
pub(super) fn transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
}

/// Whether a transport failure may pass: the connection was refused, reset
/// or closed early, timed out, or the answer was garbled on the way. A host
/// that does not resolve, a TLS failure or a bad URL stay failures.
pub(super) fn transient_transport(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::BodyStalled
    )
}

/// The wait a `Retry-After` header asks for: delay-seconds, or an HTTP-date
/// (RFC 9110 §10.2.3), counted from the answer's own `Date` when it has one,
/// so a skewed local clock does not matter. `None` without a readable one.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let now = headers
        .get("date")
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d.trim()).ok())
        .unwrap_or_else(SystemTime::now);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn backoff_doubles_with_jitter_in_its_upper_half_and_is_capped() {
        let r = Retry::default();
        for (n, full) in [(1, 1000), (2, 2000), (3, 4000), (4, 8000), (6, 30_000)] {
            let full = Duration::from_millis(full);
            assert_eq!(r.backoff(n, 0.0), full / 2, "retry {n}");
            assert!(r.backoff(n, 0.999) < full && r.backoff(n, 0.999) > full / 2);
        }
        assert_eq!(r.backoff(40, 0.5), MAX_DELAY * 3 / 4);
        // The default schedule waits at most 15 s in all.
        let total: Duration = (1..=DEFAULT_RETRIES).map(|n| r.backoff(n, 1.0)).sum();
        assert_eq!(total, Duration::from_secs(15));
        // A fixed delay is exactly that (podman's --retry-delay).
        let fixed = Retry {
            retries: 2,
            delay: Some(Duration::from_millis(10)),
        };
        assert_eq!(fixed.backoff(3, 0.7), Duration::from_millis(10));
        // Retry-After wins, capped.
        assert_eq!(
            fixed.wait(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(fixed.wait(1, Some(Duration::from_secs(3600))), MAX_DELAY);
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3")])),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&headers(&[
                ("retry-after", "Wed, 21 Oct 2015 07:28:05 GMT"),
                ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ])),
            Some(Duration::from_secs(5))
        );
        // A date already past: at once.
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Wed, 21 Oct 2015 07:28:00 GMT"
            )])),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&headers(&[])), None);
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(transient_status(s), "{s}");
        }
        for s in [200, 201, 400, 401, 403, 404, 405, 416, 501, 505] {
            assert!(!transient_status(s), "{s}");
        }
        assert!(transient_transport(&ureq::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset
        ))));
        assert!(!transient_transport(&ureq::Error::HostNotFound));
        assert!(!transient_transport(&ureq::Error::BadUri("x".into())));
    }

    #[test]
    fn run_stops_at_the_attempt_count_and_reports_each_retry_once() {
        let policy = Retry {
            retries: 2,
            delay: Some(Duration::ZERO),
        };
        let calls = Cell::new(0);
        let notices = std::cell::RefCell::new(Vec::new());
        let notice = |r: &Retrying<'_>| notices.borrow_mut().push(r.to_string());
        let err = policy
            .run::<()>("GET manifest a:1", &notice, || {
                calls.set(calls.get() + 1);
                Ok(Attempt::Again(Transient::new(Error::Status {
                    url: "u".into(),
                    status: 503,
                    body: String::new(),
                })))
            })
            .unwrap_err();
        assert_eq!(calls.get(), 3);
        assert!(matches!(err, Error::GaveUp { attempts: 3, .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "u: the registry answered 503 Service Unavailable (gave up after 3 attempts)"
        );
        assert_eq!(
            *notices.borrow(),
            [
                "retrying GET manifest a:1 in 0ms (2/3): 503 Service Unavailable",
                "retrying GET manifest a:1 in 0ms (3/3): 503 Service Unavailable",
            ]
        );
        // A final error is not retried; success ends the loop.
        calls.set(0);
        let r = policy.run::<()>("x", &notice, || {
            calls.set(calls.get() + 1);
            Err(Error::NotFound("x".into()))
        });
        assert!(matches!(r, Err(Error::NotFound(_))));
        assert_eq!(calls.get(), 1);
        let r = policy.run("x", &notice, || {
            calls.set(calls.get() + 1);
            Ok(if calls.get() < 3 {
                Attempt::Again(Transient::new(Error::NotFound("x".into())))
            } else {
                Attempt::Done(7)
            })
        });
        assert_eq!(r.unwrap(), 7);
    }

    #[test]
    fn delays_read_as_people_write_them() {
        assert_eq!(human(Duration::from_millis(350)), "350ms");
        assert_eq!(human(Duration::from_millis(1000)), "1s");
        assert_eq!(human(Duration::from_millis(1540)), "1.5s");
        assert_eq!(human(Duration::from_millis(12_300)), "12s");
        let r = Retrying {
            what: "blob 0b0c8a6c1f4e",
            delay: None,
            asked: false,
            attempt: 2,
            attempts: 2,
            reason: "it does not match its digest",
        };
        assert_eq!(
            r.to_string(),
            "retrying blob 0b0c8a6c1f4e from scratch: it does not match its digest"
        );
    }
}
