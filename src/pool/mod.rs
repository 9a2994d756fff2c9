//! Several upstreams: which targets a request may go to, in which order, and how each is
//! doing ([`health`]).
//!
//! Built once at start from the `[[upstream]]` tables; the forwarding handler asks
//! [`Pool::plan`] for a request's targets and reports each attempt's outcome back. A model
//! with `[models."NAME"] targets` goes to those; any other name goes to every upstream under
//! its own name. Lower `priority` first; equal priorities in a random order drawn by `weight`
//! for each request, so they share the load.

pub mod health;
mod report;
mod tokens;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::config::{Config, ModelTarget, UpstreamConfig};
use crate::diagnose::DiagnosisContext;
use crate::token::TokenCell;
use crate::upstream::Target;
pub use health::{Health, Resting, Why};
pub use tokens::ScopedTokens;

/// Most attempts one request makes, across targets and waits: enough for a spill to the next
/// region or two, not enough to turn one request into a storm.
pub const MAX_ATTEMPTS: usize = 4;

/// One `[[upstream]]`, ready to send to.
#[derive(Debug)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// Where its requests go.
    pub target: Target,
    /// Lower is tried first.
    pub priority: u32,
    /// Share among equal priorities.
    pub weight: u32,
    /// The token cell of its scope (shared by upstreams with the same scope).
    pub tokens: Arc<TokenCell>,
    /// The scope of that token.
    pub scope: String,
    /// How its targets are doing.
    pub health: Health,
    /// What explanations of its refusals say about it (its host, style, scope).
    pub diagnosis: DiagnosisContext,
    /// Counters for `/metrics` and `/status`.
    pub counters: Counters,
}

/// Per-upstream counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Attempts sent to it.
    pub requests: AtomicU64,
    /// Attempts that failed over to another target (its 429s, 5xx, connection failures).
    pub failovers: AtomicU64,
    /// Times a target of it was put to rest (429) or ejected.
    pub rests: AtomicU64,
    /// Sum of the time to response headers, in microseconds, of its answered attempts.
    pub latency_micros: AtomicU64,
    /// Answered attempts (the latency's count).
    pub answered: AtomicU64,
}

impl Counters {
    /// Adds one answered attempt's latency.
    pub fn answered_in(&self, latency: Duration) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.latency_micros.fetch_add(
            u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// A request's target: an upstream (index into [`Pool::members`]) and the deployment to ask
/// for there; `None` keeps the request's own (no model, or a name with no targets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Index into [`Pool::members`].
    pub member: usize,
    /// The deployment on that upstream.
    pub deployment: Option<&'a str>,
}

/// The upstreams and the model routes.
#[derive(Debug)]
pub struct Pool {
    /// In file order.
    pub members: Vec<Member>,
    /// Model name → targets.
    routes: BTreeMap<String, Vec<ModelTarget>>,
    /// Every member, by priority: the targets of a model without its own.
    everyone: Vec<ModelTarget>,
    /// Wait instead of answering 429, when the smallest rest is under this.
    pub max_wait: Option<Duration>,
}

impl Pool {
    /// The pool of a configuration with `[[upstream]]` tables; `None` for the one-endpoint
    /// setup. `tokens_for` gives the token cell of a scope.
    pub fn from_config(
        config: &Config,
        mut tokens_for: impl FnMut(&str) -> Arc<TokenCell>,
    ) -> Option<Self> {
        let upstreams = &config.upstreams;
        if upstreams.list.is_empty() {
            return None;
        }
        let members = upstreams
            .list
            .iter()
            .map(|u| Member {
                name: u.name.clone(),
                target: Target::new(
                    &u.endpoint,
                    u.api,
                    u.api_version.as_deref(),
                    config.models.clone(),
                ),
                priority: u.priority,
                weight: u.weight.max(1),
                tokens: tokens_for(&u.scope),
                scope: u.scope.clone(),
                health: Health::default(),
                diagnosis: diagnosis_of(config, u),
                counters: Counters::default(),
            })
            .collect::<Vec<_>>();
        let mut everyone: Vec<ModelTarget> = (0..members.len())
            .map(|member| ModelTarget {
                upstream: member,
                deployment: String::new(),
            })
            .collect();
        everyone.sort_by_key(|t| members[t.upstream].priority);
        Some(Self {
            members,
            routes: upstreams.models.clone(),
            everyone,
            max_wait: upstreams.max_wait,
        })
    }

    /// The targets of a request for `model`, in the order to try them: by priority, equal
    /// priorities shuffled by weight.
    pub fn plan<'a>(&'a self, model: Option<&'a str>) -> Vec<Candidate<'a>> {
        let (targets, own_name) = match model.and_then(|m| self.routes.get(m)) {
            Some(targets) => (targets.as_slice(), false),
            None => (self.everyone.as_slice(), true),
        };
        let mut plan: Vec<Candidate<'a>> = targets
            .iter()
            .map(|t| Candidate {
                member: t.upstream,
                deployment: if own_name {
                    None
                } else {
                    Some(t.deployment.as_str())
                },
            })
            .collect();
        plan.sort_by_key(|c| self.members[c.member].priority);
        let mut rng = rand::rng();
        let mut start = 0;
        while start < plan.len() {
            let priority = self.members[plan[start].member].priority;
            let end = plan[start..]
                .iter()
                .position(|c| self.members[c.member].priority != priority)
                .map_or(plan.len(), |n| start + n);
            if end - start > 1 {
                self.shuffle_by_weight(&mut plan[start..end], &mut rng);
            }
            start = end;
        }
        plan
    }

    /// Orders `group` so each place is drawn with odds proportional to weight.
    fn shuffle_by_weight(&self, group: &mut [Candidate<'_>], rng: &mut impl Rng) {
        for place in 0..group.len() {
            let total: u64 = group[place..]
                .iter()
                .map(|c| u64::from(self.members[c.member].weight))
                .sum();
            let mut pick = rng.random_range(0..total.max(1));
            let mut chosen = place;
            for (offset, candidate) in group[place..].iter().enumerate() {
                let weight = u64::from(self.members[candidate.member].weight);
                if pick < weight {
                    chosen = place + offset;
                    break;
                }
                pick -= weight;
            }
            group.swap(place, chosen);
        }
    }

    /// The health key of a candidate: its deployment, or the model name it is sent under.
    pub fn key<'a>(candidate: &Candidate<'a>, model: Option<&'a str>) -> &'a str {
        candidate.deployment.or(model).unwrap_or("")
    }

    /// How long a candidate still rests, if it does.
    pub fn resting(
        &self,
        candidate: &Candidate<'_>,
        model: Option<&str>,
        now: Instant,
    ) -> Option<Duration> {
        self.members[candidate.member]
            .health
            .resting(Self::key(candidate, model), now)
    }
}

/// The diagnosis context of one upstream: the proxy's identity with the upstream's host,
/// style, api-version and scope.
pub(crate) fn diagnosis_of(config: &Config, upstream: &UpstreamConfig) -> DiagnosisContext {
    let mut context = DiagnosisContext::from_config(config);
    context.endpoint_host = upstream
        .endpoint
        .host_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    context.api = upstream.api.as_str();
    context.api_version = upstream
        .api_version
        .clone()
        .or_else(|| upstream.api.default_api_version().map(str::to_owned));
    context.scope.clone_from(&upstream.scope);
    context
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Settings, load};

    fn pool(text: &str) -> Pool {
        let dir = std::env::temp_dir().join(format!("fp-pool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join(format!("{}.toml", text.len()));
        std::fs::write(&file, text).expect("write");
        let env: BTreeMap<String, String> = [
            ("AZURE_TENANT_ID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000001"),
            ("AZURE_CLIENT_SECRET", "abc~def"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = load(Some(&file), &env, Settings::default()).expect("config");
        let cell = TokenCell::new(crate::token::TokenPolicy::default(), "client-secret");
        Pool::from_config(&config, |_| Arc::clone(&cell)).expect("pool")
    }

    const THREE: &str = r#"
[[upstream]]
name = "ptu"
endpoint = "https://a.openai.azure.com"
priority = 0
[[upstream]]
name = "heavy"
endpoint = "https://b.openai.azure.com"
priority = 1
weight = 3
[[upstream]]
name = "light"
endpoint = "https://c.openai.azure.com"
priority = 1
[models."gpt-4o"]
targets = [ { upstream = "light", deployment = "l" }, { upstream = "ptu", deployment = "p" } ]
"#;

    /// Priority decides the order; a model's targets carry their deployments; other names go
    /// everywhere under their own name.
    #[test]
    fn upstreams_plan_by_priority() {
        let pool = pool(THREE);
        let plan = pool.plan(Some("gpt-4o"));
        assert_eq!(
            plan,
            [
                Candidate {
                    member: 0,
                    deployment: Some("p")
                },
                Candidate {
                    member: 2,
                    deployment: Some("l")
                },
            ]
        );
        let other = pool.plan(Some("other"));
        assert_eq!(other.len(), 3);
        assert_eq!(other[0].member, 0);
        assert!(other.iter().all(|c| c.deployment.is_none()));
    }

    /// Equal priorities share by weight: over many draws, the weight-3 upstream leads about
    /// three times as often as the weight-1 one.
    #[test]
    fn upstreams_plan_shares_by_weight() {
        let pool = pool(THREE);
        let heavy_first = (0..4000).filter(|_| pool.plan(None)[1].member == 1).count();
        assert!((2600..3400).contains(&heavy_first), "{heavy_first}");
    }
}
