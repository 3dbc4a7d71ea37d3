//! `tls-server-end-point` channel binding data (RFC 5929, section 4.1):
//! the hash of the server's certificate, by the hash function of the
//! certificate's signature algorithm (SHA-256 in place of MD5 or SHA-1),
//! as PostgreSQL computes it for SCRAM-SHA-256-PLUS.

use sha2::{Digest, Sha256, Sha384, Sha512};

/// The binding data for the certificate `der`; None when its signature
/// algorithm names no hash to use (Ed25519, RSASSA-PSS) or it does not
/// parse, in which case channel binding is not offered.
pub fn tls_server_end_point(der: &[u8]) -> Option<Vec<u8>> {
    let (0x30, certificate, _) = tlv(der)? else {
        return None;
    };
    let (0x30, _tbs, rest) = tlv(certificate)? else {
        return None;
    };
    let (0x30, algorithm, _) = tlv(rest)? else {
        return None;
    };
    let (0x06, oid, _) = tlv(algorithm)? else {
        return None;
    };
    Some(match hash_of(oid)? {
        Hash::Sha256 => Sha256::digest(der).to_vec(),
        Hash::Sha384 => Sha384::digest(der).to_vec(),
        Hash::Sha512 => Sha512::digest(der).to_vec(),
    })
}

enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// The hash a signature algorithm OID (DER content bytes) uses.
fn hash_of(oid: &[u8]) -> Option<Hash> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    if let Some(&[n]) = oid.strip_prefix(RSA) {
        return match n {
            // md5, sha1 (and sha224, which PostgreSQL also hashes with
            // SHA-256), sha256WithRSAEncryption
            4 | 5 | 11 | 14 => Some(Hash::Sha256),
            12 => Some(Hash::Sha384),
            13 => Some(Hash::Sha512),
            _ => None,
        };
    }
    match oid.strip_prefix(ECDSA)? {
        // ecdsa-with-SHA1
        [0x01] => Some(Hash::Sha256),
        // ecdsa-with-SHA224 .. SHA512
        [0x03, 0x01] | [0x03, 0x02] => Some(Hash::Sha256),
        [0x03, 0x03] => Some(Hash::Sha384),
        [0x03, 0x04] => Some(Hash::Sha512),
        _ => None,
    }
}

/// One DER tag-length-value: tag, content, and what follows it.
fn tlv(buf: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = buf.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate's outer structure with signature algorithm `oid`.
    fn cert(oid: &[u8]) -> Vec<u8> {
        let tbs = [0x30, 0x03, 0x02, 0x01, 0x01];
        let mut alg = vec![0x30, oid.len() as u8 + 2, 0x06, oid.len() as u8];
        alg.extend_from_slice(oid);
        let sig = [0x03, 0x02, 0x00, 0xff];
        let body: Vec<u8> = [&tbs[..], &alg, &sig].concat();
        let mut out = vec![0x30, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn the_hash_follows_the_signature_algorithm() {
        let ecdsa_sha256 = cert(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]);
        assert_eq!(
            tls_server_end_point(&ecdsa_sha256).unwrap(),
            Sha256::digest(&ecdsa_sha256).to_vec()
        );
        let rsa_sha384 = cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c]);
        assert_eq!(tls_server_end_point(&rsa_sha384).unwrap().len(), 48);
        let rsa_sha1 = cert(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]);
        assert_eq!(
            tls_server_end_point(&rsa_sha1).unwrap().len(),
            32,
            "SHA-1 → SHA-256"
        );
        let ed25519 = cert(&[0x2b, 0x65, 0x70]);
        assert_eq!(tls_server_end_point(&ed25519), None);
        assert_eq!(tls_server_end_point(b"\x30\x82\xff"), None, "truncated");
        assert_eq!(tls_server_end_point(b""), None);
    }
}
