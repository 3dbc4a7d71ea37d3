//! pgsplit as SCRAM-SHA-256 server: `ScramServer::client_first` and
//! `client_final` on client messages, and `ScramSecret::parse` on verifier
//! strings.
//!
//! Input: client-first-message, a NUL byte, client-final-message. The
//! server's nonce is random, so in the client-final `@N` stands for the
//! nonce the server just sent, and a proof written as `p=@P` is replaced by
//! the correct proof for password "scrampass".
//!
//! Invariants: no panic; server-first extends the client's nonce; the
//! exchange succeeds with the correct proof and only with it (no bypass),
//! and its server signature is the right one; messages out of order fail.
#![no_main]

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use pgsplit_protocol::auth::{salted_password, ScramError, ScramSecret, ScramServer};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "scrampass";

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The verifier and salted password, computed once (4 096 iterations).
fn secret() -> &'static (Arc<ScramSecret>, [u8; 32]) {
    static S: OnceLock<(Arc<ScramSecret>, [u8; 32])> = OnceLock::new();
    S.get_or_init(|| {
        let s = ScramSecret::from_password(PASSWORD);
        let salted = salted_password(PASSWORD.as_bytes(), s.salt(), s.iterations());
        (Arc::new(s), salted)
    })
}

fn attr<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split(',').find_map(|p| p.strip_prefix(name))
}

fuzz_target!(|data: &[u8]| {
    let _ = ScramSecret::parse(&String::from_utf8_lossy(data));

    let (first, last) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let (secret, salted) = secret();
    let mut server = ScramServer::new(Arc::clone(secret));
    assert_eq!(server.client_final(last), Err(ScramError::OutOfOrder));
    let mut server = ScramServer::new(Arc::clone(secret));
    let Ok(server_first) = server.client_first(first) else {
        return;
    };
    assert_eq!(server.client_first(first), Err(ScramError::OutOfOrder));
    let server_first = String::from_utf8(server_first).expect("server-first is UTF-8");
    let first = std::str::from_utf8(first).expect("accepted client-first is UTF-8");
    // The bare message is what follows the gs2 header's second comma.
    let bare = first
        .splitn(3, ',')
        .nth(2)
        .expect("accepted client-first has a gs2 header");
    let client_nonce = attr(bare, "r=").expect("accepted client-first has a nonce");
    let nonce = attr(&server_first, "r=").expect("server-first has a nonce");
    assert!(nonce.starts_with(client_nonce) && nonce.len() > client_nonce.len());

    let last = String::from_utf8_lossy(last).replace("@N", nonce);
    let mut forged_proof = false;
    let last = match last.rsplit_once(",p=") {
        Some((without_proof, "@P")) => {
            let auth_message = format!("{bare},{server_first},{without_proof}");
            let client_key = hmac(salted, b"Client Key");
            let stored: [u8; 32] = Sha256::digest(client_key).into();
            let sig = hmac(&stored, auth_message.as_bytes());
            let proof: Vec<u8> = client_key.iter().zip(sig).map(|(k, s)| k ^ s).collect();
            forged_proof = true;
            format!("{without_proof},p={}", B64.encode(proof))
        }
        _ => last,
    };
    let result = server.client_final(last.as_bytes());
    assert_eq!(
        server.client_final(last.as_bytes()),
        Err(ScramError::OutOfOrder)
    );
    match result {
        Ok(server_final) => {
            assert!(
                forged_proof,
                "accepted a proof the fuzzer could not know: {last:?}"
            );
            let (without_proof, _) = last.rsplit_once(",p=").unwrap();
            let auth_message = format!("{bare},{server_first},{without_proof}");
            let expected = hmac(&hmac(salted, b"Server Key"), auth_message.as_bytes());
            assert_eq!(
                server_final,
                format!("v={}", B64.encode(expected)).into_bytes()
            );
        }
        Err(ScramError::BadProof) => {
            // Only reachable once channel binding and nonce matched.
            assert!(last.contains(nonce));
        }
        Err(_) => {}
    }
});
