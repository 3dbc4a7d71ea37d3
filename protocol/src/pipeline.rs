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

use crate::tag::{backend as be, frontend as fe};

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
    /// A reply the proxy gives itself (e.g. ParseComplete for a statement
    /// the server already has), due once everything before it is answered.
    /// The tag is a `tag::backend` acknowledgement with an empty body
    /// (`tag::backend::has_empty_body`), written with `encode::empty_message`.
    Synthetic(u8),
    /// The client's CopyDone or CopyFail: no reply, but it marks where
    /// COPY FROM STDIN ended in the request stream (see `on_message`).
    CopyEnd,
}

impl Request {
    /// The request a client message creates, if it gets a reply at all
    /// (Flush and the COPY sub-protocol messages do not).
    pub fn for_frontend_tag(tag: u8) -> Option<Request> {
        Some(match tag {
            fe::PARSE => Request::Parse,
            fe::BIND => Request::Bind,
            fe::CLOSE => Request::Close,
            fe::DESCRIBE => Request::Describe,
            fe::EXECUTE => Request::Execute,
            fe::QUERY | fe::SYNC | fe::FUNCTION_CALL => Request::UntilReady,
            fe::COPY_DONE | fe::COPY_FAIL => Request::CopyEnd,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Disposition {
    /// Send it to the client (false: it answers a request the proxy made).
    pub forward: bool,
    /// It was a ReadyForQuery.
    pub ready: bool,
    /// COPY FROM STDIN began, so the server will ignore the client's Syncs
    /// sent before its CopyDone: `(skip, count)` says that of the client's
    /// outstanding Sync/Query requests, after the first `skip`, `count` will
    /// get no ReadyForQuery.
    pub ignored_syncs: Option<(usize, usize)>,
}

#[derive(Default, Debug, Clone)]
pub struct ResponseTracker {
    entries: VecDeque<Entry>,
}

impl ResponseTracker {
    pub fn push(&mut self, request: Request, forward: bool) {
        // A copy end with nothing outstanding marks nothing.
        if request == Request::CopyEnd && self.entries.is_empty() {
            return;
        }
        self.entries.push_back(Entry { request, forward });
    }

    /// Markers that expect no reply leave as soon as they reach the front.
    fn drop_markers(&mut self) {
        while matches!(self.entries.front(), Some(e) if e.request == Request::CopyEnd) {
            self.entries.pop_front();
        }
    }

    /// The server entered COPY FROM STDIN for the front request: it ignores
    /// Syncs until the client's CopyDone/CopyFail, so those never get a reply.
    fn copy_in_started(&mut self) -> Option<(usize, usize)> {
        let skip = usize::from(matches!(
            self.entries.front(),
            Some(e) if e.request == Request::UntilReady && e.forward
        ));
        let mut ignored = 0;
        let mut i = 1;
        while i < self.entries.len() {
            match self.entries[i].request {
                Request::CopyEnd => break,
                Request::UntilReady => {
                    ignored += usize::from(self.entries[i].forward);
                    self.entries.remove(i);
                }
                _ => i += 1,
            }
        }
        (ignored > 0).then_some((skip, ignored))
    }

    /// No reply outstanding: the connection is between requests.
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pops the proxy's own reply if it is next in line: it must reach the
    /// client now, before the server's next message. Call after `push` and
    /// after each `on_message`.
    pub fn take_synthetic(&mut self) -> Option<u8> {
        match self.entries.front() {
            Some(Entry {
                request: Request::Synthetic(tag),
                ..
            }) => {
                let tag = *tag;
                self.entries.pop_front();
                Some(tag)
            }
            _ => None,
        }
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
        self.drop_markers();
        let Some(front) = self.entries.front().copied() else {
            // Nothing outstanding: a notification, a parameter change, or a
            // server shutting the connection down. The client should see it.
            return Disposition {
                forward: true,
                ready: tag == be::READY_FOR_QUERY,
                ignored_syncs: None,
            };
        };
        let mut disposition = Disposition {
            forward: front.forward,
            ready: tag == be::READY_FOR_QUERY,
            ignored_syncs: None,
        };
        match tag {
            // A notification is for the client whatever request it arrived
            // behind (PostgreSQL delivers them just before ReadyForQuery).
            be::NOTIFICATION_RESPONSE => disposition.forward = true,
            be::COPY_IN_RESPONSE => disposition.ignored_syncs = self.copy_in_started(),
            // Asynchronous messages may arrive at any time and end nothing.
            be::NOTICE_RESPONSE | be::PARAMETER_STATUS => {}
            be::ERROR_RESPONSE => {
                if front.request != Request::UntilReady {
                    // A failed injected Parse or Close makes the server skip
                    // the client's own messages up to Sync: the client must
                    // see why, or it gets a ReadyForQuery and nothing else.
                    disposition.forward = true;
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
                    Request::Parse => tag == be::PARSE_COMPLETE,
                    Request::Bind => tag == be::BIND_COMPLETE,
                    Request::Close => tag == be::CLOSE_COMPLETE,
                    // ParameterDescription comes first and ends nothing.
                    Request::Describe => matches!(tag, be::ROW_DESCRIPTION | be::NO_DATA),
                    Request::Execute => matches!(
                        tag,
                        be::COMMAND_COMPLETE | be::EMPTY_QUERY_RESPONSE | be::PORTAL_SUSPENDED
                    ),
                    Request::UntilReady => tag == be::READY_FOR_QUERY,
                    // Never at the front when a server message arrives:
                    // callers drain them with take_synthetic first.
                    Request::Synthetic(_) | Request::CopyEnd => false,
                };
                if ends {
                    self.entries.pop_front();
                }
            }
        }
        self.drop_markers();
        disposition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds the server tags spelt out in `tags` (one character per
    /// message, e.g. "12DCZ") and shows the forwarded ones, '-' for dropped.
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
    fn synthetic_replies_come_out_in_order_and_vanish_after_an_error() {
        let mut t = ResponseTracker::default();
        t.push(Request::Synthetic(be::PARSE_COMPLETE), true);
        assert_eq!(
            t.take_synthetic(),
            Some(be::PARSE_COMPLETE),
            "nothing owed before it: due at once"
        );
        t.push(Request::Bind, true);
        t.push(Request::Synthetic(be::CLOSE_COMPLETE), true);
        assert_eq!(t.take_synthetic(), None, "the Bind's reply comes first");
        assert_eq!(run(&mut t, "2"), "2");
        assert_eq!(t.take_synthetic(), Some(be::CLOSE_COMPLETE));
        // After an error the server skips to Sync; so do owed synthetic replies.
        t.push(Request::Bind, true);
        t.push(Request::Synthetic(be::PARSE_COMPLETE), true);
        t.push(Request::UntilReady, true);
        assert_eq!(run(&mut t, "E"), "E");
        assert_eq!(t.take_synthetic(), None);
        assert_eq!(run(&mut t, "Z"), "Z");
        assert!(t.is_idle());
    }

    #[test]
    fn syncs_sent_during_copy_in_get_no_reply() {
        let mut t = ResponseTracker::default();
        // tokio-postgres: Bind, Execute, Sync; CopyData..., CopyDone, Sync; Close, Sync.
        t.push(Request::Bind, true);
        t.push(Request::Execute, true);
        t.push(Request::UntilReady, true);
        assert_eq!(t.on_message(be::BIND_COMPLETE).ignored_syncs, None);
        let d = t.on_message(be::COPY_IN_RESPONSE);
        assert_eq!(
            d.ignored_syncs,
            Some((0, 1)),
            "the first Sync is swallowed by COPY"
        );
        t.push(Request::CopyEnd, true);
        t.push(Request::UntilReady, true);
        t.push(Request::Synthetic(be::CLOSE_COMPLETE), true);
        t.push(Request::UntilReady, true);
        assert_eq!(run(&mut t, "CZ"), "CZ");
        assert_eq!(
            t.take_synthetic(),
            Some(be::CLOSE_COMPLETE),
            "CloseComplete before the last ReadyForQuery"
        );
        assert_eq!(run(&mut t, "Z"), "Z");
        assert!(t.is_idle());

        // Simple-protocol COPY with a stray Sync before CopyDone.
        t.push(Request::UntilReady, true);
        t.push(Request::UntilReady, true);
        assert_eq!(
            t.on_message(be::COPY_IN_RESPONSE).ignored_syncs,
            Some((1, 1))
        );
        t.push(Request::CopyEnd, true);
        assert_eq!(run(&mut t, "CZ"), "CZ");
        assert!(t.is_idle());
    }

    #[test]
    fn errors_of_injected_messages_and_notifications_reach_the_client() {
        let mut t = ResponseTracker::default();
        t.push(Request::Parse, false);
        t.push(Request::Bind, true);
        t.push(Request::UntilReady, true);
        assert_eq!(
            run(&mut t, "EZ"),
            "EZ",
            "the client learns why its Bind did nothing"
        );
        t.push(Request::UntilReady, false);
        assert_eq!(
            run(&mut t, "CAZ"),
            "-A-",
            "a notification behind pgsplit's own query"
        );
        assert!(t.is_idle());
    }

    #[test]
    fn request_kinds_from_frontend_tags() {
        assert_eq!(Request::for_frontend_tag(fe::PARSE), Some(Request::Parse));
        assert_eq!(
            Request::for_frontend_tag(fe::SYNC),
            Some(Request::UntilReady)
        );
        assert_eq!(Request::for_frontend_tag(fe::FLUSH), None);
        assert_eq!(Request::for_frontend_tag(fe::COPY_DATA), None);
    }
}
