//! Which server response belongs to which request.
//!
//! A proxy that adds requests of its own to a server connection (re-preparing
//! a statement, restoring `SET`s, a deferred `BEGIN`) must drop exactly the
//! replies to those, in the middle of a pipeline that may hold many client
//! requests. [`ResponseTracker`] keeps one entry per request sent, in order,
//! and tells for every server message whether it is forwarded and whether the
//! connection is now quiet.
//!
//! The rules are the protocol's: each extended-protocol message produces one
//! reply (ParseComplete, BindComplete, CloseComplete; Describe's
//! ParameterDescription then RowDescription or NoData; Execute's rows then
//! CommandComplete, EmptyQueryResponse or PortalSuspended). An
//! ErrorResponse ends the failing message, and the server then skips
//! everything up to the next Sync, so those entries vanish without replies.
//! A simple Query, a Sync and a FunctionCall end with ReadyForQuery.

use std::collections::VecDeque;

/// The kind of reply a request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Parse,
    Bind,
    Close,
    Describe,
    Execute,
    /// Query, Sync or FunctionCall: everything up to ReadyForQuery.
    UntilReady,
}

impl Request {
    /// The request a client message creates, if it gets a reply at all
    /// (Flush and the COPY sub-protocol messages do not).
    pub fn for_frontend_tag(tag: u8) -> Option<Request> {
        Some(match tag {
            b'P' => Request::Parse,
            b'B' => Request::Bind,
            b'C' => Request::Close,
            b'D' => Request::Describe,
            b'E' => Request::Execute,
            b'Q' | b'S' | b'F' => Request::UntilReady,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    request: Request,
    forward: bool,
}

/// What to do with one server message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disposition {
    /// Send it to the client (false: it answers a request the proxy made).
    pub forward: bool,
    /// It was a ReadyForQuery.
    pub ready: bool,
}

#[derive(Default, Debug)]
pub struct ResponseTracker {
    entries: VecDeque<Entry>,
}

impl ResponseTracker {
    pub fn push(&mut self, request: Request, forward: bool) {
        self.entries.push_back(Entry { request, forward });
    }

    /// No reply outstanding: the connection is between requests.
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty()
    }

    /// Requests that end with ReadyForQuery still outstanding.
    pub fn pending_ready(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.request == Request::UntilReady)
            .count()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Accounts for one server message with `tag`.
    pub fn on_message(&mut self, tag: u8) -> Disposition {
        let Some(front) = self.entries.front().copied() else {
            // Nothing outstanding: a notification, a parameter change, or a
            // server shutting the connection down. The client should see it.
            return Disposition {
                forward: true,
                ready: tag == b'Z',
            };
        };
        let disposition = Disposition {
            forward: front.forward,
            ready: tag == b'Z',
        };
        match tag {
            // Asynchronous messages may arrive at any time and end nothing.
            b'N' | b'A' | b'S' => {}
            b'E' => {
                if front.request != Request::UntilReady {
                    self.entries.pop_front();
                    // The server skips to the next Sync: drop what it skips.
                    while let Some(e) = self.entries.front() {
                        if e.request == Request::UntilReady {
                            break;
                        }
                        self.entries.pop_front();
                    }
                }
            }
            _ => {
                let ends = match front.request {
                    Request::Parse => tag == b'1',
                    Request::Bind => tag == b'2',
                    Request::Close => tag == b'3',
                    Request::Describe => matches!(tag, b'T' | b'n'),
                    Request::Execute => matches!(tag, b'C' | b'I' | b's'),
                    Request::UntilReady => tag == b'Z',
                };
                if ends {
                    self.entries.pop_front();
                }
            }
        }
        disposition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(t: &mut ResponseTracker, tags: &str) -> String {
        tags.bytes()
            .map(|tag| {
                if t.on_message(tag).forward {
                    tag as char
                } else {
                    '-'
                }
            })
            .collect()
    }

    #[test]
    fn injected_parse_reply_is_dropped_in_a_pipeline() {
        let mut t = ResponseTracker::default();
        // Client: Parse A, Bind, Execute; proxy: Parse s1; client: Bind s1, Execute, Sync.
        t.push(Request::Parse, true);
        t.push(Request::Bind, true);
        t.push(Request::Execute, true);
        t.push(Request::Parse, false);
        t.push(Request::Bind, true);
        t.push(Request::Execute, true);
        t.push(Request::UntilReady, true);
        assert_eq!(run(&mut t, "12DDC12DCZ"), "12DDC-2DCZ");
        assert!(t.is_idle());
    }

    #[test]
    fn an_error_skips_to_the_sync() {
        let mut t = ResponseTracker::default();
        t.push(Request::Parse, true);
        t.push(Request::Bind, true);
        t.push(Request::Execute, true);
        t.push(Request::Parse, false);
        t.push(Request::UntilReady, true);
        t.push(Request::Parse, true);
        t.push(Request::UntilReady, true);
        // Bind fails; Execute and the injected Parse are skipped by the server.
        assert_eq!(run(&mut t, "1EZ"), "1EZ");
        assert_eq!(t.pending_ready(), 1);
        assert_eq!(run(&mut t, "1Z"), "1Z");
        assert!(t.is_idle());
    }

    #[test]
    fn a_dropped_prelude_query_and_describe_and_copy() {
        let mut t = ResponseTracker::default();
        t.push(Request::UntilReady, false); // "RESET ALL; SET ..." by the proxy
        t.push(Request::Parse, true);
        t.push(Request::Describe, true);
        t.push(Request::UntilReady, true);
        t.push(Request::Bind, true);
        t.push(Request::Execute, true);
        t.push(Request::UntilReady, true);
        assert_eq!(run(&mut t, "SCCZ"), "----");
        assert_eq!(run(&mut t, "1tTZ"), "1tTZ");
        // COPY FROM STDIN through Execute: CopyInResponse, then CommandComplete.
        assert_eq!(run(&mut t, "2GNCZ"), "2GNCZ");
        assert!(t.is_idle());
    }

    #[test]
    fn simple_query_errors_wait_for_ready() {
        let mut t = ResponseTracker::default();
        t.push(Request::UntilReady, true);
        assert_eq!(run(&mut t, "TDCE"), "TDCE");
        assert!(
            !t.is_idle(),
            "a failed simple query still ends with ReadyForQuery"
        );
        assert_eq!(run(&mut t, "Z"), "Z");
        assert!(t.is_idle());
    }

    #[test]
    fn portal_suspended_and_empty_query_end_an_execute() {
        let mut t = ResponseTracker::default();
        t.push(Request::Execute, true);
        t.push(Request::Execute, true);
        t.push(Request::UntilReady, true);
        assert_eq!(run(&mut t, "DDsIZ"), "DDsIZ");
        assert!(t.is_idle());
    }

    #[test]
    fn unsolicited_messages_are_forwarded() {
        let mut t = ResponseTracker::default();
        assert_eq!(run(&mut t, "AS"), "AS");
        assert!(t.is_idle());
    }

    #[test]
    fn request_kinds_from_frontend_tags() {
        assert_eq!(Request::for_frontend_tag(b'P'), Some(Request::Parse));
        assert_eq!(Request::for_frontend_tag(b'S'), Some(Request::UntilReady));
        assert_eq!(Request::for_frontend_tag(b'H'), None);
        assert_eq!(Request::for_frontend_tag(b'd'), None);
    }
}
