//! The startup-phase decoder (`split_startup`) on arbitrary bytes, read as
//! the first packets of a connection.
//!
//! Invariants: no panic; `Ok(None)` leaves the buffer untouched; a decoded
//! packet consumed exactly the length its header declared (8..=10 000); a
//! decoded StartupMessage re-encodes to the same parameters.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgsplit_protocol::encode;
use pgsplit_protocol::startup::{split_startup, StartupPacket, MAX_STARTUP_PACKET};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    // A client may send SSLRequest/GSSENCRequest before its StartupMessage,
    // so keep cutting until the decoder wants more or refuses.
    for _ in 0..8 {
        let before = buf.clone();
        match split_startup(&mut buf) {
            Ok(None) => {
                assert_eq!(buf, before, "Ok(None) must not consume");
                break;
            }
            Err(_) => break,
            Ok(Some(packet)) => {
                let consumed = before.len() - buf.len();
                let declared =
                    u32::from_be_bytes([before[0], before[1], before[2], before[3]]) as usize;
                assert_eq!(consumed, declared);
                assert!((8..=MAX_STARTUP_PACKET).contains(&consumed));
                if let StartupPacket::Startup(m) = packet {
                    let _ = (m.user(), m.database(), m.protocol_options().count());
                    let params: Vec<(&str, &str)> = m
                        .params
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    let mut again = BytesMut::new();
                    encode::startup_message(&mut again, &params);
                    if again.len() <= MAX_STARTUP_PACKET {
                        match split_startup(&mut again) {
                            Ok(Some(StartupPacket::Startup(m2))) => {
                                assert_eq!(m2.params, m.params);
                                assert_eq!(m2.minor_version, 0);
                            }
                            other => panic!("re-encoded startup message: {other:?}"),
                        }
                        assert!(again.is_empty());
                    }
                }
            }
        }
    }
});
