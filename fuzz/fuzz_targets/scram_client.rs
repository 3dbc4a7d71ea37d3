//! pgsplit as SCRAM-SHA-256 client (logging in to a backend):
//! `ScramClient::server_first` and `server_final` on server messages.
//!
//! Input: server-first-message, a NUL byte, server-final-message. The
//! client's nonce is random, so `@N` in the server-first stands for it, and
//! `v=@V` in the server-final is replaced by the correct server signature.
//! The salted-password function is a cheap stand-in (the real one runs up
//! to a million iterations); it is checked to receive the salt and count
//! the server sent.
//!
//! Invariants: no panic; a client-final is produced only for a nonce that
//! extends ours, and carries that nonce and a 32-byte proof; the server is
//! accepted only with the correct signature; messages out of order fail.
#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use pgsplit_protocol::auth::{ScramClient, ScramError};
use sha2::{Digest, Sha256};

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn fake_salted(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(password);
    h.update(salt);
    h.update(iterations.to_be_bytes());
    h.finalize().into()
}

fn attr<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split(',').find_map(|p| p.strip_prefix(name))
}

fuzz_target!(|data: &[u8]| {
    let (first, last) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut client = ScramClient::new("scrampass");
    assert_eq!(client.server_final(last), Err(ScramError::OutOfOrder));

    let mut client = ScramClient::new("scrampass");
    let client_first = client.client_first();
    let our_nonce = client_first
        .strip_prefix("n,,n=,r=")
        .expect("client-first shape")
        .to_owned();
    let first = String::from_utf8_lossy(first).replace("@N", &our_nonce);
    let mut seen = None;
    let result = client.server_first(first.as_bytes(), |p, s, i| {
        seen = Some((s.to_vec(), i));
        fake_salted(p, s, i)
    });
    let Ok(client_final) = result else {
        return;
    };
    assert!(matches!(
        client.server_first(first.as_bytes(), fake_salted),
        Err(ScramError::OutOfOrder)
    ));
    let nonce = attr(&first, "r=").expect("accepted server-first has a nonce");
    assert!(nonce.starts_with(&our_nonce) && nonce.len() > our_nonce.len());
    let (salt, iterations) = seen.expect("salted-password function called");
    assert_eq!(
        Some(salt),
        attr(&first, "s=").and_then(|s| B64.decode(s).ok())
    );
    assert_eq!(
        Some(iterations),
        attr(&first, "i=").and_then(|i| i.parse().ok())
    );
    let (without_proof, proof) = client_final
        .rsplit_once(",p=")
        .expect("client-final has a proof");
    assert_eq!(without_proof, format!("c=biws,r={nonce}"));
    assert_eq!(B64.decode(proof).map(|p| p.len()), Ok(32));

    let salted = fake_salted(
        b"scrampass",
        &B64.decode(attr(&first, "s=").unwrap()).unwrap(),
        iterations,
    );
    let auth_message = format!("n=,r={our_nonce},{first},{without_proof}");
    let signature = B64.encode(hmac(&hmac(&salted, b"Server Key"), auth_message.as_bytes()));
    let last = String::from_utf8_lossy(last);
    let substituted = last.contains("@V");
    let last = last.replace("@V", &signature);
    let result = client.server_final(last.as_bytes());
    assert_eq!(
        client.server_final(last.as_bytes()),
        Err(ScramError::OutOfOrder)
    );
    if result.is_ok() {
        assert!(
            substituted,
            "accepted a signature the fuzzer could not know: {last:?}"
        );
    }
});
