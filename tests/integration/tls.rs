//! TLS to the upstream: certificates are verified, and extra CAs come from SSL_CERT_FILE.

use crate::common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use common::{Harness, Setup, error_of};
use foundry_proxy::config::Settings;
use foundry_proxy::emulator::{self, EmulatorConfig, identities as world};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A private CA and a server certificate for 127.0.0.1 that it signed.
struct TestPki {
    ca_pem: String,
    server: ServerConfig,
}

fn test_pki() -> TestPki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("leaf params");
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let mut server = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("server config");
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TestPki {
        ca_pem: ca_cert.pem(),
        server,
    }
}

/// Terminates TLS on 127.0.0.1:0 and relays plain bytes to `backend`.
async fn tls_front(server: ServerConfig, backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = TlsAcceptor::from(Arc::new(server));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

async fn harness(trust_ca: bool) -> Harness {
    let pki = test_pki();
    let running = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    let front = tls_front(pki.server, running.addr).await;
    let mut env = BTreeMap::new();
    if trust_ca {
        let path = std::env::temp_dir().join(format!(
            "fp-tls-ca-{}-{}.pem",
            std::process::id(),
            front.port()
        ));
        std::fs::write(&path, &pki.ca_pem).expect("write ca");
        env.insert(
            "SSL_CERT_FILE".to_owned(),
            path.to_string_lossy().into_owned(),
        );
    }
    let setup = Setup {
        settings: Settings {
            endpoint: Some(format!("https://127.0.0.1:{}", front.port())),
            ..Settings::default()
        },
        env,
        ..Setup::default()
    };
    Harness::start_on(running, setup).await
}

/// An https endpoint signed by a private CA works once SSL_CERT_FILE names that CA (HTTP/2
/// negotiated by ALPN or HTTP/1.1, whichever the server offers).
#[tokio::test]
async fn extra_ca_from_ssl_cert_file() {
    let harness = harness(true).await;
    let response = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "over tls"),
        )
        .await;
    assert_eq!(response.status(), 200);
    harness.stop().await;
}

/// Without the CA the certificate is refused: 502 in the OpenAI shape naming the cause.
#[tokio::test]
async fn untrusted_certificate_is_502() {
    let harness = harness(false).await;
    let response = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "over tls"),
        )
        .await;
    assert_eq!(response.status(), 502);
    let error = error_of(response).await;
    assert_eq!(error["code"], "upstream_unreachable");
    let message = error["message"]
        .as_str()
        .expect("message")
        .to_ascii_lowercase();
    assert!(
        message.contains("certificate") || message.contains("issuer"),
        "{message}"
    );
    assert!(harness.emulator.emulator.inference_requests().is_empty());
    harness.stop().await;
}
