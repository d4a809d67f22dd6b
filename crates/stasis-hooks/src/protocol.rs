//! Protocol v1 line format: parsing and formatting of requests and replies.
//!
//! Every function here is pure (no I/O) so it can be property-tested.

use std::fmt;
use std::str::FromStr;

/// Protocol version spoken by this crate (`STASIS/1`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Maximum length of one line in bytes, including the terminating `\n`.
pub const MAX_LINE: usize = 4096;

/// An event the supervisor tells the workload about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    /// A checkpoint is about to be taken: flush what must be in the image.
    PreCheckpoint,
    /// The process has just been restored from an image: refresh caches.
    PostRestore,
}

impl Event {
    /// All events of protocol v1.
    pub const ALL: [Event; 2] = [Event::PreCheckpoint, Event::PostRestore];

    /// The wire name (`PRE-CHECKPOINT` or `POST-RESTORE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Event::PreCheckpoint => "PRE-CHECKPOINT",
            Event::PostRestore => "POST-RESTORE",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string is not the wire name of a v1 event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event {0:?}")]
pub struct UnknownEvent(pub String);

impl FromStr for Event {
    type Err = UnknownEvent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "PRE-CHECKPOINT" => Ok(Event::PreCheckpoint),
            "POST-RESTORE" => Ok(Event::PostRestore),
            other => Err(UnknownEvent(other.to_owned())),
        }
    }
}

/// A request line: `STASIS/1 <EVENT> <id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// What happened.
    pub event: Event,
    /// Correlation token echoed in the reply.
    pub id: u64,
}

impl Request {
    /// The request line, without the terminating `\n`.
    pub fn to_line(&self) -> String {
        format!("STASIS/{PROTOCOL_VERSION} {} {}", self.event, self.id)
    }
}

/// Why a request line could not be turned into a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not of the form `STASIS/<version> <EVENT> <id>`; no reply can be correlated.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// Well formed, but not protocol version 1. The workload answers `FAIL <id> ...`.
    #[error("unsupported protocol version {version:?}")]
    UnsupportedVersion {
        /// The version token after `STASIS/`.
        version: String,
        /// The request id.
        id: u64,
    },
    /// Version 1 but an event this implementation does not know. The workload
    /// answers `OK <id>` (it does not want the event).
    #[error("unknown event {event:?}")]
    UnknownEvent {
        /// The event token.
        event: String,
        /// The request id.
        id: u64,
    },
}

/// A reply line: `OK <id>` or `FAIL <id> <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The event was handled (or not wanted).
    Ok {
        /// The request id.
        id: u64,
    },
    /// The workload's handler failed.
    Fail {
        /// The request id.
        id: u64,
        /// Free text, one line.
        reason: String,
    },
}

impl Reply {
    /// The request id this reply answers.
    pub fn id(&self) -> u64 {
        match self {
            Reply::Ok { id } | Reply::Fail { id, .. } => *id,
        }
    }

    /// The reply line, without the terminating `\n`. A `FAIL` reason is
    /// passed through [`sanitize_reason`] so the line is always parseable.
    pub fn to_line(&self) -> String {
        match self {
            Reply::Ok { id } => format!("OK {id}"),
            Reply::Fail { id, reason } => format!("FAIL {id} {}", sanitize_reason(reason)),
        }
    }
}

/// Make a reason fit on one reply line: control characters become spaces,
/// surrounding whitespace is trimmed, an empty reason becomes `unspecified`,
/// and it is truncated (on a character boundary) to leave room in [`MAX_LINE`].
pub fn sanitize_reason(reason: &str) -> String {
    // "FAIL " + 20 digits + " " + reason + "\n" must fit in MAX_LINE.
    const MAX_REASON: usize = MAX_LINE - 32;
    let cleaned: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut s = cleaned.trim().to_owned();
    if s.is_empty() {
        s.push_str("unspecified");
    }
    if s.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Strip the optional trailing `\r` a line may carry (the `\n` is already removed).
fn strip_cr(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

/// Parse a decimal id: 1 to 20 ASCII digits fitting in a `u64`.
pub fn parse_id(token: &str) -> Option<u64> {
    if token.is_empty() || token.len() > 20 || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// Parse a request line (without its `\n`; one trailing `\r` is tolerated).
pub fn parse_request(line: &str) -> Result<Request, RequestError> {
    let line = strip_cr(line);
    let malformed = || RequestError::Malformed(truncate_for_log(line));
    let mut parts = line.split(' ');
    let (Some(magic), Some(event), Some(id), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let version = magic.strip_prefix("STASIS/").ok_or_else(malformed)?;
    let id = parse_id(id).ok_or_else(malformed)?;
    if version.is_empty() || event.is_empty() {
        return Err(malformed());
    }
    if version != "1" {
        return Err(RequestError::UnsupportedVersion {
            version: version.to_owned(),
            id,
        });
    }
    match event.parse::<Event>() {
        Ok(event) => Ok(Request { event, id }),
        Err(UnknownEvent(event)) => Err(RequestError::UnknownEvent { event, id }),
    }
}

/// A reply line that is not `OK <id>` or `FAIL <id> <reason>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply {0:?}")]
pub struct ReplyError(pub String);

/// Parse a reply line (without its `\n`; one trailing `\r` is tolerated).
/// `FAIL <id>` without a reason is accepted with an empty reason.
pub fn parse_reply(line: &str) -> Result<Reply, ReplyError> {
    let line = strip_cr(line);
    let malformed = || ReplyError(truncate_for_log(line));
    if let Some(rest) = line.strip_prefix("OK ") {
        let id = parse_id(rest).ok_or_else(malformed)?;
        return Ok(Reply::Ok { id });
    }
    if let Some(rest) = line.strip_prefix("FAIL ") {
        let (id, reason) = match rest.split_once(' ') {
            Some((id, reason)) => (id, reason),
            None => (rest, ""),
        };
        let id = parse_id(id).ok_or_else(malformed)?;
        return Ok(Reply::Fail {
            id,
            reason: reason.to_owned(),
        });
    }
    Err(malformed())
}

/// A bounded copy of a peer-supplied line for error messages and logs.
pub(crate) fn truncate_for_log(line: &str) -> String {
    const MAX: usize = 200;
    if line.len() <= MAX {
        return line.to_owned();
    }
    let mut cut = MAX;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &line[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_examples() {
        assert_eq!(
            parse_request("STASIS/1 PRE-CHECKPOINT 42"),
            Ok(Request {
                event: Event::PreCheckpoint,
                id: 42
            })
        );
        assert_eq!(
            parse_request("STASIS/1 POST-RESTORE 7\r").map(|r| r.event),
            Ok(Event::PostRestore)
        );
        assert!(matches!(
            parse_request("STASIS/2 PRE-CHECKPOINT 3"),
            Err(RequestError::UnsupportedVersion { id: 3, .. })
        ));
        assert!(matches!(
            parse_request("STASIS/1 PRE-MIGRATE 9"),
            Err(RequestError::UnknownEvent { id: 9, .. })
        ));
        for bad in [
            "",
            "STASIS/1",
            "STASIS/1 PRE-CHECKPOINT",
            "STASIS/1 PRE-CHECKPOINT x",
            "STASIS/1 PRE-CHECKPOINT -1",
            "STASIS/1 PRE-CHECKPOINT 1 extra",
            "STASIS/1  PRE-CHECKPOINT 1",
            "stasis/1 PRE-CHECKPOINT 1",
            "STASIS/1 PRE-CHECKPOINT 99999999999999999999",
        ] {
            assert!(
                matches!(parse_request(bad), Err(RequestError::Malformed(_))),
                "{bad:?} should be malformed"
            );
        }
    }

    #[test]
    fn reply_examples() {
        assert_eq!(parse_reply("OK 1"), Ok(Reply::Ok { id: 1 }));
        assert_eq!(
            parse_reply("FAIL 2 disk full, try later"),
            Ok(Reply::Fail {
                id: 2,
                reason: "disk full, try later".into()
            })
        );
        assert_eq!(
            parse_reply("FAIL 3"),
            Ok(Reply::Fail {
                id: 3,
                reason: String::new()
            })
        );
        for bad in [
            "", "OK", "OK x", "OK 1 2", "ok 1", "FAIL", "FAIL x y", "HELLO",
        ] {
            assert!(parse_reply(bad).is_err(), "{bad:?} should be malformed");
        }
    }

    #[test]
    fn sanitize() {
        assert_eq!(sanitize_reason(" a\nb\r "), "a b");
        assert_eq!(sanitize_reason("\n"), "unspecified");
        let long = "é".repeat(MAX_LINE);
        let s = sanitize_reason(&long);
        assert!(
            Reply::Fail {
                id: u64::MAX,
                reason: s
            }
            .to_line()
            .len()
                < MAX_LINE
        );
    }
}
