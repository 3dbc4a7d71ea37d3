//! The pipeline `ResponseTracker` driven by arbitrary sequences of requests
//! and server messages.
//!
//! Input: pairs of bytes `(op, tag)`. op `>`: the client sent a message with
//! frontend `tag` (pushed if it gets a reply, forwarded); `#`: the proxy
//! injected one (its reply is dropped); `~`: the proxy owes the client a
//! synthetic reply `tag` (an empty-bodied acknowledgement); `<`: the server
//! sent a message with backend `tag`; `!`: the connection is reset
//! (`clear`). Other op bytes map onto these by value. Owed synthetic
//! replies are drained after every step, as the proxy does.
//!
//! Invariants: no panic; idle means no ReadyForQuery pending; a message with
//! nothing outstanding is forwarded; only ReadyForQuery and CopyInResponse
//! change the number of pending ReadyForQuery (the first by at most one);
//! `ignored_syncs` counts only pending forwarded Syncs; synthetic replies
//! come out as pushed, once each.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use pgsplit_protocol::pipeline::{Request, ResponseTracker};
use pgsplit_protocol::tag::backend as be;

/// Takes the synthetic replies now due. Each must be one still owed; owed
/// replies before it were dropped by the tracker (skipped after an error),
/// so they are forgotten, which keeps the order check.
fn drain(t: &mut ResponseTracker, owed: &mut VecDeque<u8>) {
    while let Some(tag) = t.take_synthetic() {
        let at = owed.iter().position(|&o| o == tag);
        assert!(at.is_some(), "synthetic reply {:?} not owed", tag as char);
        owed.drain(..=at.unwrap());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut t = ResponseTracker::default();
    // Synthetic replies pushed and not yet taken, in order.
    let mut owed: VecDeque<u8> = VecDeque::new();
    for pair in data.chunks_exact(2) {
        let (op, tag) = (pair[0], pair[1]);
        let op = match op {
            b'>' | b'#' | b'~' | b'<' | b'!' => op,
            other => [b'>', b'#', b'~', b'<', b'<', b'>'][usize::from(other) % 6],
        };
        match op {
            b'>' | b'#' => {
                if let Some(r) = Request::for_frontend_tag(tag) {
                    t.push(r, op == b'>');
                }
            }
            b'~' => {
                if be::has_empty_body(tag) {
                    t.push(Request::Synthetic(tag), true);
                    owed.push_back(tag);
                }
            }
            b'!' => {
                t.clear();
                owed.clear();
                assert!(t.is_idle() && t.pending_ready() == 0);
            }
            _ => {
                let idle = t.is_idle();
                let before = t.pending_ready();
                let d = t.on_message(tag);
                let after = t.pending_ready();
                assert_eq!(d.ready, tag == be::READY_FOR_QUERY);
                if idle {
                    assert!(d.forward, "a message with nothing outstanding is dropped");
                    assert_eq!(after, 0);
                }
                match tag {
                    be::READY_FOR_QUERY => assert!(after == before || after + 1 == before),
                    be::COPY_IN_RESPONSE => {
                        assert!(after <= before);
                        if let Some((skip, count)) = d.ignored_syncs {
                            assert!(skip <= 1 && count > 0);
                            assert!(before - after >= count);
                        }
                    }
                    _ => assert_eq!(after, before, "{:?} changed pending_ready", tag as char),
                }
                if tag != be::COPY_IN_RESPONSE {
                    assert_eq!(d.ignored_syncs, None);
                }
            }
        }
        drain(&mut t, &mut owed);
        if t.is_idle() {
            assert_eq!(t.pending_ready(), 0);
            owed.clear();
        }
    }
});
