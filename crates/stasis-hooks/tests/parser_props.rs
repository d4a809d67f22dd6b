//! Property tests for the line parser.

use proptest::prelude::*;
use stasis_hooks::protocol::{parse_reply, parse_request, sanitize_reason, RequestError, MAX_LINE};
use stasis_hooks::{Event, Reply, Request};

fn event() -> impl Strategy<Value = Event> {
    prop::sample::select(Event::ALL.to_vec())
}

proptest! {
    #[test]
    fn request_roundtrips(ev in event(), id in any::<u64>()) {
        let req = Request { event: ev, id };
        let line = req.to_line();
        prop_assert!(!line.contains('\n'));
        prop_assert_eq!(parse_request(&line), Ok(req));
        prop_assert_eq!(parse_request(&format!("{line}\r")), Ok(req));
    }

    #[test]
    fn ok_reply_roundtrips(id in any::<u64>()) {
        let r = Reply::Ok { id };
        prop_assert_eq!(parse_reply(&r.to_line()), Ok(r));
    }

    #[test]
    fn fail_reply_roundtrips_sanitized(id in any::<u64>(), reason in any::<String>()) {
        let line = Reply::Fail { id, reason: reason.clone() }.to_line();
        prop_assert!(!line.chars().any(char::is_control));
        prop_assert!(line.len() < MAX_LINE);
        prop_assert_eq!(
            parse_reply(&line),
            Ok(Reply::Fail { id, reason: sanitize_reason(&reason) })
        );
    }

    #[test]
    fn parsers_never_panic(line in any::<String>()) {
        let _ = parse_request(&line);
        let _ = parse_reply(&line);
    }

    #[test]
    fn near_miss_requests(ev in "[A-Z-]{1,16}", ver in "[0-9]{1,3}", id in any::<u64>()) {
        let line = format!("STASIS/{ver} {ev} {id}");
        match parse_request(&line) {
            Ok(req) => {
                prop_assert_eq!(ver.as_str(), "1");
                prop_assert_eq!(req.event.as_str(), ev.as_str());
                prop_assert_eq!(req.id, id);
            }
            Err(RequestError::UnsupportedVersion { id: got, .. }) => {
                prop_assert_ne!(ver.as_str(), "1");
                prop_assert_eq!(got, id);
            }
            Err(RequestError::UnknownEvent { event, id: got }) => {
                prop_assert_eq!(event, ev);
                prop_assert_eq!(got, id);
            }
            Err(e @ RequestError::Malformed(_)) => prop_assert!(false, "{e}"),
        }
    }

    #[test]
    fn garbage_ids_are_rejected(ev in event(), id in "[^0-9 ]{1,8}|[0-9]{21,25}") {
        let req = format!("STASIS/1 {ev} {id}");
        prop_assert!(matches!(parse_request(&req), Err(RequestError::Malformed(_))));
        let reply = format!("OK {}", id);
        prop_assert!(parse_reply(&reply).is_err());
    }
}
