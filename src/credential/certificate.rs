//! Reading a client certificate: a PEM file holding the certificate (chain) and its RSA
//! private key, or a PKCS#12 (.pfx/.p12) file with a password.

use std::path::Path;

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// A certificate chain (leaf first) and the leaf's private key, ready to sign assertions.
pub struct CertificateMaterial {
    /// DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The private key as a PKCS#1 or PKCS#8 PEM text, as `jsonwebtoken` takes it.
    pub key_pem: Secret,
}

impl std::fmt::Debug for CertificateMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateMaterial")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl CertificateMaterial {
    /// Reads `path`: PEM if it looks like text, else PKCS#12 opened with `password`.
    pub fn load(path: &Path, password: Option<&Secret>) -> Result<Self, String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
            Self::from_pem(&bytes)
        } else {
            Self::from_pkcs12(&bytes, password.map_or("", Secret::expose))
        }
    }

    fn from_pem(bytes: &[u8]) -> Result<Self, String> {
        let chain: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(bytes)
            .map(|cert| cert.map(|c| c.to_vec()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("the PEM file has a broken certificate: {e}"))?;
        if chain.is_empty() {
            return Err("the PEM file has no CERTIFICATE block".to_owned());
        }
        let key = PrivateKeyDer::from_pem_slice(bytes)
            .map_err(|e| format!("the PEM file has no usable private key: {e}"))?;
        let key_pem =
            match key {
                PrivateKeyDer::Pkcs1(der) => pem("RSA PRIVATE KEY", der.secret_pkcs1_der()),
                PrivateKeyDer::Pkcs8(der) => pem("PRIVATE KEY", der.secret_pkcs8_der()),
                _ => return Err(
                    "the private key is not an RSA key (Entra client assertions are RSA-signed)"
                        .to_owned(),
                ),
            };
        Ok(Self { chain, key_pem })
    }

    fn from_pkcs12(bytes: &[u8], password: &str) -> Result<Self, String> {
        let store = p12_keystore::KeyStore::from_pkcs12(bytes, password, p12_keystore::Pkcs12ImportPolicy::Relaxed)
            .map_err(|e| format!("cannot open the PKCS#12 file (wrong AZURE_CLIENT_CERTIFICATE_PASSWORD, or not a PKCS#12 file): {e}"))?;
        let (_, keychain) = store
            .private_key_chain()
            .ok_or("the PKCS#12 file holds no private key")?;
        let chain: Vec<Vec<u8>> = keychain
            .certs()
            .iter()
            .map(|c| c.as_der().to_vec())
            .collect();
        if chain.is_empty() {
            return Err("the PKCS#12 file holds a key but no certificate".to_owned());
        }
        Ok(Self {
            chain,
            key_pem: pem("PRIVATE KEY", keychain.key().as_der()),
        })
    }

    /// The `x5t#S256` thumbprint: base64url SHA-256 of the leaf certificate's DER.
    pub fn thumbprint_sha256(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(&self.chain[0]))
    }

    /// The `x5c` chain: standard base64 DER, leaf first.
    pub fn x5c(&self) -> Vec<String> {
        self.chain
            .iter()
            .map(|der| base64::engine::general_purpose::STANDARD.encode(der))
            .collect()
    }
}

fn pem(label: &str, der: &[u8]) -> Secret {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    Secret::new(text)
}
