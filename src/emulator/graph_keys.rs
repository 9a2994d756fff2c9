//! Graph's `addKey` (docs/azure-facts.md §8): a certificate added to an application that has
//! one already, proved by a JWT signed with an existing certificate's private key (`aud`
//! `00000002-0000-0000-c000-000000000000`, `iss` the application's object id, at most ten
//! minutes long). An application without a certificate cannot use it; Update application
//! (`PATCH … keyCredentials`, in `graph`) adds the first one.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::entra::certificate::Certificate;
use super::entra::jwt::signature_only;
use super::graph::{GraphError, authenticate, bad_request, certificate_of, not_found};
use super::state::Emulator;
use super::util::uuid;

/// The audience of an `addKey` proof: Azure AD Graph's application id.
const PROOF_AUDIENCE: &str = "00000002-0000-0000-c000-000000000000";
/// The longest a proof may live.
const PROOF_LIFETIME_SECS: u64 = 600;

/// `POST /v1.0/applications/{id}/addKey` `{keyCredential:{type,usage,key}, proof}` → 200 the
/// new keyCredential.
pub(crate) async fn add_key(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Response, GraphError> {
    authenticate(&emu, &headers)?;
    let cert = certificate_of(body.get("keyCredential").unwrap_or(&Value::Null))?;
    let proof = body
        .get("proof")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_request("Property 'proof' is required."))?
        .to_owned();
    let mut dir = emu.directory.lock();
    let app = dir.application_mut(&id).ok_or_else(|| not_found(&id))?;
    // UNCONFIRMED: the status and code Graph answers for a missing or bad proof.
    let proved = app
        .certificates
        .iter()
        .any(|(_, existing)| valid_proof(&proof, existing, &app.id, emu.now_secs()));
    if !proved {
        return Err(bad_request(
            "Proof of possession is invalid: it must be signed by one of the application's existing certificates.",
        ));
    }
    let key_id = uuid();
    app.certificates.push((key_id.clone(), cert));
    Ok(Json(json!({
        "keyId": key_id, "type": "AsymmetricX509Cert", "usage": "Verify", "key": null,
    }))
    .into_response())
}

/// Whether `proof` is signed by `cert`, names the app as issuer and Graph as audience, and is
/// current and short-lived.
fn valid_proof(proof: &str, cert: &Certificate, app_object_id: &str, now: u64) -> bool {
    let Ok(header) = jsonwebtoken::decode_header(proof) else {
        return false;
    };
    let Ok(data) = jsonwebtoken::decode::<Value>(proof, &cert.key, &signature_only(header.alg))
    else {
        return false;
    };
    let claims = data.claims;
    let number = |name: &str| claims.get(name).and_then(Value::as_u64);
    let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default();
    let (Some(nbf), Some(exp)) = (number("nbf"), number("exp")) else {
        return false;
    };
    text("aud") == PROOF_AUDIENCE
        && text("iss").eq_ignore_ascii_case(app_object_id)
        && nbf <= now
        && now <= exp
        && exp.saturating_sub(nbf) <= PROOF_LIFETIME_SECS
}
