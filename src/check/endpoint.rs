//! The endpoint step: DNS, TCP, TLS, and whether the host is a custom-subdomain endpoint
//! (regional endpoints accept only API keys).

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use url::Url;

use super::{Status, Step};
use crate::diagnose::RefusalCode;
use crate::diagnose::{self, DiagnosisContext};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Host suffixes of endpoints that take Entra tokens (custom subdomains and serverless).
const TOKEN_HOSTS: &[&str] = &[
    ".openai.azure.com",
    ".services.ai.azure.com",
    ".cognitiveservices.azure.com",
    ".models.ai.azure.com",
    ".inference.ai.azure.com",
    ".openai.azure.us",
    ".cognitiveservices.azure.us",
    ".openai.azure.cn",
    ".cognitiveservices.azure.cn",
];

/// Regional hosts (`{region}.api.cognitive.microsoft.com`): key-only.
fn is_regional(host: &str) -> bool {
    host.ends_with(".api.cognitive.microsoft.com")
        || host.ends_with(".api.cognitive.azure.cn")
        || host.ends_with(".api.cognitive.microsoft.us")
}

/// Runs the endpoint step.
pub(super) async fn check(
    endpoint: &Url,
    ctx: &DiagnosisContext,
    tls: &Arc<rustls::ClientConfig>,
) -> Step {
    let host = endpoint
        .host_str()
        .unwrap_or_default()
        .trim_matches(|c| c == '[' || c == ']')
        .to_ascii_lowercase();
    let port = endpoint.port_or_known_default().unwrap_or(443);
    if is_regional(&host) {
        let error = diagnose::explain(
            RefusalCode::CustomSubdomainRequired,
            StatusCode::BAD_REQUEST,
            &ctx.vars(),
        );
        return Step::from_error("endpoint", Status::Fail, &error);
    }
    let addresses = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(found)) => found.collect::<Vec<_>>(),
        Ok(Err(e)) => return unreachable(ctx, format!("DNS lookup of {host} failed: {e}")),
        Err(_) => return unreachable(ctx, format!("DNS lookup of {host} timed out")),
    };
    let Some(first) = addresses.first().copied() else {
        return unreachable(ctx, format!("DNS lookup of {host} returned no address"));
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(first)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return unreachable(ctx, format!("TCP connect to {first} failed: {e}")),
        Err(_) => return unreachable(ctx, format!("TCP connect to {first} timed out")),
    };
    let mut facts = vec![format!("{host} → {first}"), "TCP ok".to_owned()];
    if endpoint.scheme() == "https" {
        let Ok(name) = ServerName::try_from(host.clone()) else {
            return unreachable(ctx, format!("'{host}' is not a valid TLS server name"));
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls));
        match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => {
                let (_, session) = stream.get_ref();
                let version = session
                    .protocol_version()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default();
                facts.push(format!("TLS ok ({version}, certificate verified)"));
            }
            Ok(Err(e)) => {
                return unreachable(ctx, format!("TLS handshake with {host} failed: {e}"));
            }
            Err(_) => return unreachable(ctx, format!("TLS handshake with {host} timed out")),
        }
    }
    let loopback = first.ip().is_loopback();
    let mut step = Step::new("endpoint", Status::Pass, facts.join(", "));
    if TOKEN_HOSTS.iter().any(|suffix| host.ends_with(suffix)) {
        step = step.detail("custom-subdomain endpoint: accepts Entra tokens");
    } else if loopback {
        step = step.detail("loopback endpoint (an emulator or a local gateway)");
    } else {
        step.status = Status::Warn;
        step = step.detail(format!("{host} is not an Azure AI endpoint host; if it is a gateway, it must pass the Authorization header on"));
    }
    step
}

fn unreachable(ctx: &DiagnosisContext, detail: String) -> Step {
    let error = diagnose::proxy_refusal(
        RefusalCode::UpstreamUnreachable,
        &ctx.vars().set("detail", detail),
    );
    Step::from_error("endpoint", Status::Fail, &error)
}
