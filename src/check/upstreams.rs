//! `check` with several upstreams (`[[upstream]]`): every upstream's endpoint, and every
//! deployment its model targets name, walked with the token of its scope.

use std::sync::Arc;

use super::{CheckOptions, Status, Step, endpoint, entra_step, inference_step};
use crate::claims::TokenClaims;
use crate::config::Config;
use crate::credential::AccessToken;
use crate::upstream::Target;

/// One `upstream` step per upstream endpoint and per target deployment; `main` is the token
/// of `config.scope` (upstreams with another scope get their own).
pub(super) async fn steps(
    config: &Config,
    main: &AccessToken,
    options: &CheckOptions,
    tls: &Arc<rustls::ClientConfig>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (index, upstream) in config.upstreams.list.iter().enumerate() {
        let ctx = crate::pool::diagnosis_of(config, upstream).one_off();
        let label = |step: Step| named(step, &upstream.name);
        let own;
        let token = if upstream.scope == config.scope {
            main
        } else {
            let mut scoped = config.clone();
            scoped.scope.clone_from(&upstream.scope);
            let (step, token) = entra_step(&scoped, &ctx, Arc::clone(tls)).await;
            steps.push(label(step));
            let Some(token) = token else {
                continue;
            };
            own = token;
            &own
        };
        let reached = endpoint::check(&upstream.endpoint, &ctx, tls).await;
        let reachable = reached.status != Status::Fail;
        steps.push(label(reached));
        if !reachable {
            continue;
        }
        let target = Target::new(
            &upstream.endpoint,
            upstream.api,
            upstream.api_version.as_deref(),
            config.models.clone(),
        );
        let claims = TokenClaims::decode(token.token.expose());
        let mut deployments: Vec<Option<String>> = config
            .upstreams
            .models
            .values()
            .flatten()
            .filter(|t| t.upstream == index)
            .map(|t| Some(t.deployment.clone()))
            .collect();
        deployments.dedup();
        if deployments.is_empty() {
            deployments.push(options.model.clone());
        }
        for deployment in deployments {
            let options = CheckOptions {
                model: deployment.clone(),
            };
            let step = inference_step(
                &target,
                &ctx,
                token,
                claims.as_ref(),
                &options,
                Arc::clone(tls),
            )
            .await;
            let step = match &deployment {
                Some(d) => named(step, &format!("{}/{d}", upstream.name)),
                None => label(step),
            };
            steps.push(step);
        }
    }
    steps
}

/// The step renamed `upstream`, its summary starting with the upstream (and deployment).
fn named(mut step: Step, who: &str) -> Step {
    step.summary = format!("{who} ({}): {}", step.name, step.summary);
    step.name = "upstream";
    step
}
