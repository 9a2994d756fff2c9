//! Several upstreams: the `[[upstream]]` tables, the `[models."NAME"] targets` lists and
//! `max_wait`, read from the config file and checked into [`Upstreams`].
//!
//! The environment-only setup has one upstream and never reaches this module's checks. Every
//! error names the table, the key and the line of the file (the values are read as
//! [`toml::Spanned`], and the file's text is kept in [`super::Settings`] to turn a span into a
//! line).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de::value::MapAccessDeserializer};
use toml::Spanned;
use url::Url;

use super::{Cloud, ConfigError, check_scope, parse_base_url};
use crate::upstream::{ApiStyle, is_valid_deployment_name};

/// Longest upstream name: names appear in metrics labels, logs and `/status`.
const MAX_NAME: usize = 64;
/// Largest `max_wait`: a client waiting longer than this is better told to come back.
const MAX_WAIT_LIMIT: f64 = 300.0;

/// One `[[upstream]]` table as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// 1–64 letters, digits, `-`, `_`, `.`; unique.
    pub name: Spanned<String>,
    /// The resource's endpoint, as `FOUNDRY_ENDPOINT`.
    pub endpoint: Spanned<String>,
    /// The API style, as `FOUNDRY_API`; guessed from the endpoint when absent.
    pub api: Option<Spanned<String>>,
    /// The api-version, as `FOUNDRY_API_VERSION`.
    pub api_version: Option<Spanned<String>>,
    /// Lower is tried first (default 0).
    pub priority: Option<Spanned<i64>>,
    /// Share among equal priorities (default 1).
    pub weight: Option<Spanned<i64>>,
    /// The token scope for this resource; one token is held per distinct scope.
    pub scope: Option<Spanned<String>>,
}

/// One entry of the `[models]` table: an alias (`fast = "gpt-4o-mini"`) or a table with the
/// targets a model name is sent to.
#[derive(Debug, Clone)]
pub enum ModelSetting {
    /// `NAME = "deployment"`: the friendly name stands for a deployment of the one endpoint.
    Alias(String),
    /// `[models."NAME"] targets = [...]`.
    Targets(Vec<Spanned<TargetSetting>>),
}

impl From<String> for ModelSetting {
    fn from(deployment: String) -> Self {
        Self::Alias(deployment)
    }
}

/// One `{ upstream = "…", deployment = "…" }` of a model's `targets`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSetting {
    /// The `name` of an `[[upstream]]`.
    pub upstream: String,
    /// The deployment on that upstream; the model name itself when absent.
    pub deployment: Option<String>,
}

/// `[models."NAME"]` as a table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelTable {
    targets: Vec<Spanned<TargetSetting>>,
}

impl<'de> Deserialize<'de> for ModelSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either;
        impl<'de> Visitor<'de> for Either {
            type Value = ModelSetting;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a deployment name, or a table with `targets`")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ModelSetting, E> {
                Ok(ModelSetting::Alias(text.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModelSetting, A::Error> {
                let table = ModelTable::deserialize(MapAccessDeserializer::new(map))?;
                Ok(ModelSetting::Targets(table.targets))
            }
        }
        deserializer.deserialize_any(Either)
    }
}

/// One upstream, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// Its name, for targets, logs, metrics and `/status`.
    pub name: String,
    /// The endpoint.
    pub endpoint: Url,
    /// How inbound paths map to it.
    pub api: ApiStyle,
    /// Its api-version; `None` means the style's default.
    pub api_version: Option<String>,
    /// Lower is tried first.
    pub priority: u32,
    /// Share among equal priorities (at least 1).
    pub weight: u32,
    /// The token scope it takes.
    pub scope: String,
}

/// One target of a model: an upstream (by index into [`Upstreams::list`]) and a deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelTarget {
    /// Index into [`Upstreams::list`].
    pub upstream: usize,
    /// The deployment name on that upstream.
    pub deployment: String,
}

/// The upstreams of a config file, checked. Empty when the file has no `[[upstream]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upstreams {
    /// In file order.
    pub list: Vec<UpstreamConfig>,
    /// Model name → its targets, in the order written.
    pub models: BTreeMap<String, Vec<ModelTarget>>,
    /// When every target rests and the smallest wait is under this, the proxy waits instead of
    /// answering 429; `None` (the default) never waits.
    pub max_wait: Option<Duration>,
}

/// Where in the file a value is, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Source<'a>(pub(crate) Option<&'a str>);

impl Source<'_> {
    /// ` (line N)` for a span, or nothing when the text is unknown.
    fn line(&self, span: std::ops::Range<usize>) -> String {
        self.0
            .and_then(|text| text.get(..span.start))
            .map(|before| format!(" (line {})", before.matches('\n').count() + 1))
            .unwrap_or_default()
    }

    fn error(
        &self,
        setting: String,
        span: std::ops::Range<usize>,
        problem: &str,
        fix: &str,
    ) -> ConfigError {
        ConfigError::new(&setting, format!("{problem}{}", self.line(span)), fix)
    }
}

/// Checks the `[[upstream]]` tables, the `targets` of `[models]` and `max_wait`.
///
/// `scope` is `FOUNDRY_SCOPE` when set: an upstream without its own `scope` takes it, else its
/// style's and cloud's default.
pub(crate) fn validate(
    tables: Vec<Spanned<UpstreamSettings>>,
    models: &BTreeMap<String, ModelSetting>,
    max_wait: Option<f64>,
    scope: Option<&str>,
    source: Source<'_>,
) -> Result<Upstreams, ConfigError> {
    let mut list: Vec<UpstreamConfig> = Vec::with_capacity(tables.len());
    for (index, table) in tables.into_iter().enumerate() {
        let upstream = upstream(index, table.into_inner(), scope, source)?;
        if list.iter().any(|u| u.name == upstream.name) {
            return Err(ConfigError::new(
                &format!("[[upstream]] #{} name", index + 1),
                format!("'{}' is used by an earlier [[upstream]]", upstream.name),
                "give each upstream its own name",
            ));
        }
        list.push(upstream);
    }
    let mut targets = BTreeMap::new();
    for (model, setting) in models {
        let ModelSetting::Targets(entries) = setting else {
            continue;
        };
        targets.insert(model.clone(), model_targets(model, entries, &list, source)?);
    }
    let max_wait = max_wait
        .map(|secs| {
            if secs.is_finite() && (0.0..=MAX_WAIT_LIMIT).contains(&secs) {
                Ok(Duration::from_secs_f64(secs))
            } else {
                Err(ConfigError::new(
                    "max_wait",
                    format!("{secs} is not a number of seconds from 0 to {MAX_WAIT_LIMIT}"),
                    "use e.g. max_wait = 2.5, or leave it out to answer 429 at once",
                ))
            }
        })
        .transpose()?
        .filter(|wait| !wait.is_zero());
    Ok(Upstreams {
        list,
        models: targets,
        max_wait,
    })
}

/// One `[[upstream]]` table, checked.
fn upstream(
    index: usize,
    table: UpstreamSettings,
    scope: Option<&str>,
    source: Source<'_>,
) -> Result<UpstreamConfig, ConfigError> {
    let key = |name: &str| format!("[[upstream]] #{} {name}", index + 1);
    let name_span = table.name.span();
    let name = table.name.into_inner();
    let valid_name = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid_name {
        return Err(source.error(
            key("name"),
            name_span,
            &format!("'{}' is not an upstream name", name.escape_debug()),
            "use 1-64 letters, digits, '-', '_' or '.', e.g. eastus-ptu",
        ));
    }
    let key = |field: &str| format!("[[upstream]] \"{name}\" {field}");
    let endpoint_span = table.endpoint.span();
    let endpoint = parse_base_url(
        table.endpoint.get_ref(),
        &key("endpoint"),
        "use the resource's https:// endpoint, e.g. https://NAME.openai.azure.com",
    )
    .map_err(|e| with_line(e, source.line(endpoint_span)))?;
    let api = match table.api {
        Some(text) => text.get_ref().parse::<ApiStyle>().map_err(|_| {
            source.error(
                key("api"),
                text.span(),
                &format!("unknown API style '{}'", text.get_ref()),
                "use one of openai-v1, project, deployments, models, passthrough",
            )
        })?,
        None => ApiStyle::guess(&endpoint),
    };
    let api_version = match table.api_version {
        Some(version) => {
            let text = version.get_ref().trim();
            let valid = !text.is_empty()
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !valid {
                return Err(source.error(
                    key("api_version"),
                    version.span(),
                    &format!("'{text}' is not an api-version"),
                    "use a version such as 2024-10-21 or 2025-04-01-preview",
                ));
            }
            Some(text.to_owned())
        }
        None => None,
    };
    let number = |value: Option<Spanned<i64>>, field: &str, min: i64, default: u32| match value {
        None => Ok(default),
        Some(value) => u32::try_from(*value.get_ref())
            .ok()
            .filter(|n| i64::from(*n) >= min && *n <= 1_000_000)
            .ok_or_else(|| {
                source.error(
                    key(field),
                    value.span(),
                    &format!("{} is out of range", value.get_ref()),
                    &format!("use a whole number from {min} to 1000000"),
                )
            }),
    };
    let priority = number(table.priority, "priority", 0, 0)?;
    let weight = number(table.weight, "weight", 1, 1)?;
    let scope = match table.scope {
        Some(own) => {
            check_scope(own.get_ref())
                .map_err(|e| source.error(key("scope"), own.span(), &e.problem, &e.fix))?;
            own.into_inner()
        }
        None => scope.map_or_else(
            || api.default_scope(Cloud::of(&endpoint).scope()).to_owned(),
            str::to_owned,
        ),
    };
    Ok(UpstreamConfig {
        name,
        endpoint,
        api,
        api_version,
        priority,
        weight,
        scope,
    })
}

/// A model's `targets`: each names a known upstream and a valid deployment.
fn model_targets(
    model: &str,
    entries: &[Spanned<TargetSetting>],
    list: &[UpstreamConfig],
    source: Source<'_>,
) -> Result<Vec<ModelTarget>, ConfigError> {
    let key = |index: usize, field: &str| format!("[models.\"{model}\"] targets[{index}].{field}");
    if entries.is_empty() {
        return Err(ConfigError::new(
            &format!("[models.\"{model}\"] targets"),
            "is empty",
            "name at least one { upstream = \"…\", deployment = \"…\" }, or remove the table",
        ));
    }
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let target = entry.get_ref();
            let Some(upstream) = list.iter().position(|u| u.name == target.upstream) else {
                let known = list.iter().map(|u| u.name.as_str()).collect::<Vec<_>>();
                return Err(source.error(
                    key(index, "upstream"),
                    entry.span(),
                    &format!("no [[upstream]] is named '{}'", target.upstream),
                    &if known.is_empty() {
                        "add an [[upstream]] table with that name".to_owned()
                    } else {
                        format!("use one of: {}", known.join(", "))
                    },
                ));
            };
            let deployment = target.deployment.clone().unwrap_or_else(|| model.to_owned());
            if !is_valid_deployment_name(&deployment) {
                return Err(source.error(
                    key(index, "deployment"),
                    entry.span(),
                    &format!("'{}' is not a valid deployment name", deployment.escape_debug()),
                    "use the deployment name exactly as shown in the Foundry portal (letters, digits, '-', '_', '.')",
                ));
            }
            Ok(ModelTarget {
                upstream,
                deployment,
            })
        })
        .collect()
}

fn with_line(mut error: ConfigError, line: String) -> ConfigError {
    error.problem.push_str(&line);
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn parse(text: &str) -> Result<Upstreams, ConfigError> {
        let settings: Settings = toml::from_str(text).expect("toml");
        validate(
            settings.upstream.unwrap_or_default(),
            &settings.models.unwrap_or_default(),
            settings.max_wait,
            None,
            Source(Some(text)),
        )
    }

    const EXAMPLE: &str = r#"
max_wait = 2.5

[[upstream]]
name = "eastus-ptu"
endpoint = "https://contoso-eastus.openai.azure.com"
api = "deployments"
api_version = "2024-10-21"
priority = 0
weight = 1

[[upstream]]
name = "sweden-paygo"
endpoint = "https://contoso-sweden.openai.azure.com"
priority = 1

[models]
fast = "gpt-4o-mini"

[models."gpt-4o"]
targets = [ { upstream = "eastus-ptu", deployment = "gpt-4o-ptu" },
            { upstream = "sweden-paygo", deployment = "gpt-4o" } ]
"#;

    /// The issue's example reads into two upstreams, one target list and the wait.
    #[test]
    fn upstreams_example_parses() {
        let upstreams = parse(EXAMPLE).expect("valid");
        assert_eq!(upstreams.list.len(), 2);
        let ptu = &upstreams.list[0];
        assert_eq!(ptu.name, "eastus-ptu");
        assert_eq!(ptu.api, ApiStyle::Deployments);
        assert_eq!(ptu.api_version.as_deref(), Some("2024-10-21"));
        assert_eq!(ptu.scope, crate::config::DEFAULT_SCOPE);
        assert_eq!(upstreams.list[1].priority, 1);
        assert_eq!(upstreams.list[1].weight, 1);
        assert_eq!(
            upstreams.models["gpt-4o"],
            [
                ModelTarget {
                    upstream: 0,
                    deployment: "gpt-4o-ptu".into()
                },
                ModelTarget {
                    upstream: 1,
                    deployment: "gpt-4o".into()
                }
            ]
        );
        assert!(!upstreams.models.contains_key("fast"));
        assert_eq!(upstreams.max_wait, Some(Duration::from_millis(2500)));
    }

    /// Each mistake names the table, the key and the line.
    #[test]
    fn upstreams_errors_name_table_key_line() {
        let cases = [
            (
                EXAMPLE.replace("name = \"sweden-paygo\"", "name = \"sweden paygo\""),
                "[[upstream]] #2 name",
                "line 13",
            ),
            (
                EXAMPLE.replace("api = \"deployments\"", "api = \"deploy\""),
                "[[upstream]] \"eastus-ptu\" api",
                "line 7",
            ),
            (
                EXAMPLE.replace("priority = 1", "priority = -1"),
                "[[upstream]] \"sweden-paygo\" priority",
                "line 15",
            ),
            (
                EXAMPLE.replace("weight = 1", "weight = 0"),
                "[[upstream]] \"eastus-ptu\" weight",
                "line 10",
            ),
            (
                EXAMPLE.replace(
                    "https://contoso-sweden.openai.azure.com",
                    "http://contoso-sweden.openai.azure.com",
                ),
                "[[upstream]] \"sweden-paygo\" endpoint",
                "line 14",
            ),
            (
                EXAMPLE.replace("upstream = \"sweden-paygo\"", "upstream = \"sweden\""),
                "[models.\"gpt-4o\"] targets[1].upstream",
                "line 22",
            ),
            (
                EXAMPLE.replace("deployment = \"gpt-4o\" }", "deployment = \"gpt 4o\" }"),
                "[models.\"gpt-4o\"] targets[1].deployment",
                "line 22",
            ),
            (
                EXAMPLE.replace("eastus-ptu\"\nendpoint", "sweden-paygo\"\nendpoint"),
                "[[upstream]] #2 name",
                "",
            ),
            (
                EXAMPLE.replace("max_wait = 2.5", "max_wait = -1"),
                "max_wait",
                "",
            ),
        ];
        for (text, setting, line) in cases {
            let err = parse(&text).expect_err(setting);
            assert_eq!(err.setting, setting, "{err}");
            assert!(err.problem.contains(line), "{err}");
        }
    }

    /// Equal names, unknown keys in a target and a target list with nothing in it are refused.
    #[test]
    fn upstreams_shape_errors() {
        let unknown = EXAMPLE.replace("deployment = \"gpt-4o-ptu\"", "deploy = \"gpt-4o-ptu\"");
        assert!(toml::from_str::<Settings>(&unknown).is_err());
        let empty = "[models.\"gpt-4o\"]\ntargets = []\n";
        assert_eq!(
            parse(empty).expect_err("empty").setting,
            "[models.\"gpt-4o\"] targets"
        );
    }
}
