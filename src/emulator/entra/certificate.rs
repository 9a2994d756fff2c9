//! Registered client certificates: PEM parsing, thumbprints and the RSA public key, read with a
//! minimal DER walk (just far enough to reach the SubjectPublicKeyInfo).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;

use super::digest::{sha1, sha256};

/// DER of the rsaEncryption OID (1.2.840.113549.1.1.1), tag and length included.
const RSA_ENCRYPTION_OID: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
];

/// A certificate registered on an app: what the token endpoint needs to check an assertion.
#[derive(Clone)]
pub(crate) struct Certificate {
    /// The certificate's DER, to compare with an assertion's `x5c`.
    pub(crate) der: Vec<u8>,
    /// base64url SHA-1 of the DER: the `x5t` header.
    pub(crate) x5t: String,
    /// base64url SHA-256 of the DER: the `x5t#S256` header.
    pub(crate) x5t_s256: String,
    /// The RSA public key, for RS256 and PS256.
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("x5t", &self.x5t)
            .field("x5t_s256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// The first `CERTIFICATE` block of a PEM text (other blocks, e.g. a private key, are ignored).
    pub(crate) fn from_pem(pem: &str) -> Result<Self, String> {
        let der = pem_blocks(pem, "CERTIFICATE")
            .into_iter()
            .next()
            .ok_or("no CERTIFICATE block in the PEM text")?;
        Self::from_der(der)
    }

    /// A certificate from its DER; only RSA keys are accepted (Entra's RS256/PS256).
    pub(crate) fn from_der(der: Vec<u8>) -> Result<Self, String> {
        let rsa_public_key =
            rsa_public_key(&der).ok_or("not an X.509 certificate with an RSA key")?;
        Ok(Self {
            x5t: URL_SAFE_NO_PAD.encode(sha1(&der)),
            x5t_s256: URL_SAFE_NO_PAD.encode(sha256(&der)),
            key: DecodingKey::from_rsa_der(rsa_public_key),
            der,
        })
    }
}

/// The DER of every `-----BEGIN {label}-----` block, in order; undecodable blocks are skipped.
pub(crate) fn pem_blocks(pem: &str, label: &str) -> Vec<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(&begin) {
        let body = &rest[start + begin.len()..];
        let Some(stop) = body.find(&end) else { break };
        let text: String = body[..stop].split_whitespace().collect();
        if let Ok(der) = STANDARD.decode(text) {
            out.push(der);
        }
        rest = &body[stop + end.len()..];
    }
    out
}

/// Upper-case hex of a base64url thumbprint, as Entra prints thumbprints in AADSTS700027; the
/// input itself when it is not base64url.
pub(crate) fn thumbprint_hex(encoded: &str) -> String {
    match URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')) {
        Ok(bytes) => bytes.iter().map(|b| format!("{b:02X}")).collect(),
        Err(_) => encoded.to_owned(),
    }
}

/// One DER element: `(tag, content, rest)`.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, input) = input.split_first()?;
    let (len, input) = if first < 0x80 {
        (usize::from(first), input)
    } else {
        // Long form: the low bits count the length bytes; certificates never need more than 4.
        let count = usize::from(first & 0x7F);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (bytes, input) = input.split_at(count);
        let len = bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (len, input)
    };
    if input.len() < len {
        return None;
    }
    let (content, rest) = input.split_at(len);
    Some((tag, content, rest))
}

/// The PKCS#1 RSAPublicKey DER inside a certificate's SubjectPublicKeyInfo.
fn rsa_public_key(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = element(cert)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = element(certificate)? else {
        return None;
    };
    // Optional `[0] version`, then serial, signature algorithm, issuer, validity, subject.
    if tbs.first() == Some(&0xA0) {
        tbs = element(tbs)?.2;
    }
    for _ in 0..5 {
        tbs = element(tbs)?.2;
    }
    let (SEQUENCE, spki, _) = element(tbs)? else {
        return None;
    };
    let (SEQUENCE, algorithm, rest) = element(spki)? else {
        return None;
    };
    if !algorithm.starts_with(RSA_ENCRYPTION_OID) {
        return None;
    }
    // BIT STRING: one byte of unused bits (always 0 here), then the key's DER.
    let (0x03, bits, _) = element(rest)? else {
        return None;
    };
    match bits.split_first()? {
        (0, key) => Some(key),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::identities;

    #[test]
    fn demo_certificates_parse_with_openssl_thumbprints() {
        let cert = Certificate::from_pem(identities::CERTIFICATE_PEM).expect("demo certificate");
        assert_eq!(cert.x5t, identities::CERTIFICATE_X5T);
        assert_eq!(cert.x5t_s256, identities::CERTIFICATE_X5T_S256);
        assert_eq!(
            thumbprint_hex(&cert.x5t),
            identities::CERTIFICATE_THUMBPRINT
        );
        let other =
            Certificate::from_pem(identities::UNREGISTERED_CERTIFICATE_PEM).expect("second");
        assert_eq!(other.x5t, identities::UNREGISTERED_CERTIFICATE_X5T);
    }

    #[test]
    fn pem_without_certificate_is_refused() {
        assert!(
            Certificate::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----")
                .is_err()
        );
        assert!(Certificate::from_der(vec![0x30, 0x03, 0x02, 0x01, 0x00]).is_err());
    }
}
