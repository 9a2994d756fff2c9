//! Which Foundry surface a path belongs to, which op it names, and the api-version rules.

use super::error::FoundryError;
use crate::emulator::config::DeploymentKind;

/// Dated and preview api-versions the `deployments` surface accepts.
const OPENAI_API_VERSIONS: &[&str] = &[
    "2022-12-01",
    "2023-05-15",
    "2024-02-01",
    "2024-06-01",
    "2024-10-21",
    "2023-06-01-preview",
    "2023-12-01-preview",
    "2024-02-15-preview",
    "2024-03-01-preview",
    "2024-04-01-preview",
    "2024-05-01-preview",
    "2024-07-01-preview",
    "2024-08-01-preview",
    "2024-09-01-preview",
    "2024-10-01-preview",
    "2024-12-01-preview",
    "2025-01-01-preview",
    "2025-02-01-preview",
    "2025-03-01-preview",
    "2025-04-01-preview",
    "preview",
];

/// api-versions of the Foundry Models (model inference) surface.
const MODELS_API_VERSIONS: &[&str] = &[
    "2024-04-01-preview",
    "2024-05-01-preview",
    "2025-04-01",
    "2025-05-01",
];

/// The ways Foundry is addressed (ARCHITECTURE.md "API styles").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Surface {
    /// `/openai/v1/{op}`, deployment from the body.
    OpenAiV1,
    /// `/api/projects/{project}/openai/v1/{op}`: the v1 surface of a Foundry project, with its
    /// own audience and data action (docs/azure-facts.md §7).
    Project,
    /// `/openai/deployments/{dep}/{op}?api-version=V` or `/openai/{op}?api-version=V`.
    Deployments,
    /// `/models/{op}`, Foundry Models inference.
    Models,
    /// `/v1/{op}` or `/inference/v1/{op}`, serverless provider-native.
    Passthrough,
    /// `/anthropic/v1/messages[/count_tokens]`: Claude's Messages API, deployment from the
    /// body's `model`, no api-version (docs/azure-facts.md §7).
    Anthropic,
}

/// An operation the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    ChatCompletions,
    Completions,
    Embeddings,
    Responses,
    Models,
    AudioTranscriptions,
    AudioTranslations,
    ImagesGenerations,
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
    /// A realtime session: a WebSocket upgrade on `/openai/v1/realtime` or
    /// `/openai/realtime` (never a plain HTTP op: `Op::parse` does not know it).
    Realtime,
}

impl Op {
    fn parse(path: &str) -> Option<Op> {
        Some(match path {
            "chat/completions" => Op::ChatCompletions,
            "completions" => Op::Completions,
            "embeddings" => Op::Embeddings,
            "responses" => Op::Responses,
            "models" => Op::Models,
            "audio/transcriptions" => Op::AudioTranscriptions,
            "audio/translations" => Op::AudioTranslations,
            "images/generations" => Op::ImagesGenerations,
            _ => return None,
        })
    }

    /// Whether the op lives under `/openai/deployments/{dep}/` on the deployments surface.
    fn is_deployment_op(self) -> bool {
        !matches!(self, Op::Responses | Op::Models)
    }

    /// The HTTP method the op answers.
    pub(crate) fn method(self) -> &'static str {
        if matches!(self, Op::Models | Op::Realtime) {
            "GET"
        } else {
            "POST"
        }
    }

    /// The data action RBAC checks, and the operation as named in PermissionDenied (§5, C7, C8).
    pub(crate) fn data_action(self) -> (&'static str, &'static str) {
        match self {
            Op::ChatCompletions => (
                "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action",
                "POST /openai/deployments/{deployment-id}/chat/completions",
            ),
            Op::Completions => (
                "Microsoft.CognitiveServices/accounts/OpenAI/deployments/completions/action",
                "POST /openai/deployments/{deployment-id}/completions",
            ),
            Op::Embeddings => (
                "Microsoft.CognitiveServices/accounts/OpenAI/deployments/embeddings/action",
                "POST /openai/deployments/{deployment-id}/embeddings",
            ),
            Op::Responses => (
                "Microsoft.CognitiveServices/accounts/OpenAI/responses/write",
                "POST /openai/responses",
            ),
            Op::Models => (
                "Microsoft.CognitiveServices/accounts/OpenAI/models/read",
                "GET /openai/models",
            ),
            Op::AudioTranscriptions => (
                "Microsoft.CognitiveServices/accounts/OpenAI/deployments/audio/action",
                "POST /openai/deployments/{deployment-id}/audio/transcriptions",
            ),
            Op::AudioTranslations => (
                "Microsoft.CognitiveServices/accounts/OpenAI/deployments/audio/action",
                "POST /openai/deployments/{deployment-id}/audio/translations",
            ),
            Op::ImagesGenerations => (
                "Microsoft.CognitiveServices/accounts/OpenAI/images/generations/action",
                "POST /openai/deployments/{deployment-id}/images/generations",
            ),
            // The data action and operation Azure names for Claude are UNCONFIRMED
            // (docs/azure-facts.md §7): this wording is the emulator's own.
            Op::Messages => (
                "Microsoft.CognitiveServices/accounts/AIServices/anthropic/messages/action",
                "POST /anthropic/v1/messages",
            ),
            Op::CountTokens => (
                "Microsoft.CognitiveServices/accounts/AIServices/anthropic/messages/action",
                "POST /anthropic/v1/messages/count_tokens",
            ),
            // The data action is in the OpenAI User role's list (docs/azure-facts.md §6); the
            // operation's wording in a refusal is the emulator's own (UNCONFIRMED).
            Op::Realtime => (
                "Microsoft.CognitiveServices/accounts/OpenAI/deployments/realtime/action",
                "GET /openai/v1/realtime",
            ),
        }
    }

    /// The data action a project endpoint checks, and the operation as its PermissionDenied
    /// names it: the templated route, as in docs/azure-facts.md §7 ("POST
    /// /api/projects/{projectName}/openai/*"). `agents/read` with `GET` for the model list is
    /// **UNCONFIRMED** (the read action is observed only on the project's agent routes).
    pub(crate) fn project_data_action(self) -> (&'static str, &'static str) {
        if self.method() == "GET" {
            (
                "Microsoft.CognitiveServices/accounts/AIServices/agents/read",
                "GET /api/projects/{projectName}/openai/*",
            )
        } else {
            (
                "Microsoft.CognitiveServices/accounts/AIServices/agents/write",
                "POST /api/projects/{projectName}/openai/*",
            )
        }
    }

    /// The deployment kind the op needs (`None` for ops without a deployment).
    pub(crate) fn kind(self) -> Option<DeploymentKind> {
        match self {
            // Realtime sessions are served by any chat deployment (text modality only).
            Op::ChatCompletions | Op::Completions | Op::Responses | Op::Realtime => {
                Some(DeploymentKind::Chat)
            }
            Op::Embeddings => Some(DeploymentKind::Embeddings),
            Op::AudioTranscriptions | Op::AudioTranslations => Some(DeploymentKind::Audio),
            Op::ImagesGenerations => Some(DeploymentKind::Image),
            Op::Messages | Op::CountTokens => Some(DeploymentKind::Claude),
            Op::Models => None,
        }
    }

    /// The op's name in OperationNotSupported messages.
    pub(crate) fn short_name(self) -> &'static str {
        match self {
            Op::ChatCompletions => "chatCompletion",
            Op::Completions => "completion",
            Op::Embeddings => "embeddings",
            Op::Responses => "responses",
            Op::Models => "models",
            Op::AudioTranscriptions => "audio transcription",
            Op::AudioTranslations => "audio translation",
            Op::ImagesGenerations => "image generation",
            Op::Messages => "messages",
            Op::CountTokens => "count tokens",
            Op::Realtime => "realtime",
        }
    }

    /// The operation id Azure names in 429 messages.
    pub(crate) fn operation_id(self) -> &'static str {
        match self {
            Op::ChatCompletions => "ChatCompletions_Create",
            Op::Completions => "Completions_Create",
            Op::Embeddings => "Embeddings_Create",
            Op::Responses => "Responses_Create",
            Op::Models => "Models_List",
            Op::AudioTranscriptions => "Transcriptions_Create",
            Op::AudioTranslations => "Translations_Create",
            Op::ImagesGenerations => "ImageGenerations_Create",
            Op::Messages => "Messages_Create",
            Op::CountTokens => "Messages_CountTokens",
            Op::Realtime => "Realtime_Connect",
        }
    }
}

/// A parsed Foundry request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) surface: Surface,
    pub(crate) op: Op,
    /// Deployment named in the path (deployments surface only).
    pub(crate) path_deployment: Option<String>,
    /// Project named in the path (project surface only).
    pub(crate) project: Option<String>,
    /// The api-version in effect, if any (for messages).
    pub(crate) api_version: Option<String>,
}

/// Parses a path and checks its api-version, answering like Azure when either is wrong.
pub(crate) fn route(
    method: &str,
    path: &str,
    api_version: Option<&str>,
) -> Result<Route, FoundryError> {
    let Split {
        surface,
        op,
        path_deployment,
        project,
    } = split(path).ok_or(FoundryError::ResourceNotFound)?;
    if op.method() != method {
        return Err(FoundryError::ResourceNotFound);
    }
    let api_version = check_version(surface, api_version)?;
    Ok(Route {
        surface,
        op,
        path_deployment,
        project,
        api_version,
    })
}

/// The route of a WebSocket upgrade (docs/azure-facts.md §7): a realtime session on
/// `/openai/v1/realtime?model=D` (or a project's), or `/openai/realtime?api-version=V&deployment=D`;
/// the Responses WebSocket mode on `/openai/v1/responses` (or a project's). The realtime
/// deployment, named in the query, is the route's `path_deployment`.
pub(crate) fn websocket_route(path: &str, query: Option<&str>) -> Result<Route, FoundryError> {
    let pairs = crate::emulator::util::parse_form(query.unwrap_or_default().as_bytes());
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let path = path.trim_end_matches('/');
    let (surface, project, op) = if let Some(rest) = path.strip_prefix("/api/projects/") {
        let (project, rest) = rest.split_once('/').ok_or(FoundryError::ResourceNotFound)?;
        let op = rest.strip_prefix("openai/v1/");
        (Surface::Project, Some(project.to_owned()), op)
    } else if let Some(op) = path.strip_prefix("/openai/v1/") {
        (Surface::OpenAiV1, None, Some(op))
    } else if path == "/openai/realtime" {
        (Surface::Deployments, None, Some("realtime"))
    } else {
        return Err(FoundryError::ResourceNotFound);
    };
    let op = match op {
        Some("realtime") => Op::Realtime,
        Some("responses") => Op::Responses,
        _ => return Err(FoundryError::ResourceNotFound),
    };
    if project.as_deref() == Some("") {
        return Err(FoundryError::ResourceNotFound);
    }
    let api_version = check_version(surface, param("api-version").as_deref())?;
    let path_deployment = match (op, surface) {
        (Op::Realtime, Surface::Deployments) => param("deployment"),
        (Op::Realtime, _) => param("model"),
        _ => None,
    };
    Ok(Route {
        surface,
        op,
        path_deployment,
        project,
        api_version,
    })
}

/// What a path names, before the api-version is checked.
struct Split {
    surface: Surface,
    op: Op,
    path_deployment: Option<String>,
    project: Option<String>,
}

fn split(path: &str) -> Option<Split> {
    let path = path.trim_end_matches('/');
    let on = |surface, op| Split {
        surface,
        op,
        path_deployment: None,
        project: None,
    };
    if let Some(rest) = path.strip_prefix("/anthropic/v1/") {
        let op = match rest {
            "messages" => Op::Messages,
            "messages/count_tokens" => Op::CountTokens,
            _ => return None,
        };
        return Some(on(Surface::Anthropic, op));
    }
    if let Some(rest) = path.strip_prefix("/api/projects/") {
        let (project, rest) = rest.split_once('/')?;
        let op = Op::parse(rest.strip_prefix("openai/v1/")?)?;
        // Embeddings are not routed on the project endpoint (docs/azure-facts.md §7); Azure's
        // answer for it is assumed to be the unknown-path 404 (UNCONFIRMED).
        if project.is_empty() || op == Op::Embeddings {
            return None;
        }
        return Some(Split {
            project: Some(project.to_owned()),
            ..on(Surface::Project, op)
        });
    }
    if let Some(rest) = path.strip_prefix("/openai/v1/") {
        return Some(on(Surface::OpenAiV1, Op::parse(rest)?));
    }
    if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        let (dep, op) = rest.split_once('/')?;
        let op = Op::parse(op).filter(|o| o.is_deployment_op())?;
        return (!dep.is_empty()).then(|| Split {
            path_deployment: Some(dep.to_owned()),
            ..on(Surface::Deployments, op)
        });
    }
    if let Some(rest) = path.strip_prefix("/openai/") {
        let op = Op::parse(rest).filter(|o| !o.is_deployment_op())?;
        return Some(on(Surface::Deployments, op));
    }
    if let Some(rest) = path.strip_prefix("/models/") {
        return Some(on(Surface::Models, Op::parse(rest)?));
    }
    let rest = path
        .strip_prefix("/v1/")
        .or_else(|| path.strip_prefix("/inference/v1/"))?;
    Some(on(Surface::Passthrough, Op::parse(rest)?))
}

fn check_version(surface: Surface, version: Option<&str>) -> Result<Option<String>, FoundryError> {
    match (surface, version) {
        (Surface::Deployments, None) => Err(FoundryError::ResourceNotFound),
        (Surface::Deployments, Some(v)) if OPENAI_API_VERSIONS.contains(&v) => {
            Ok(Some(v.to_owned()))
        }
        // v1 takes no dated version; a dated one is refused (observed, zendev-sh/goai#54).
        // The project's OpenAI surface is the v1 API (docs/azure-facts.md §7), same rules.
        (Surface::OpenAiV1 | Surface::Project, None) => Ok(None),
        (Surface::OpenAiV1 | Surface::Project, Some(v)) if v == "preview" || v == "latest" => {
            Ok(Some(v.to_owned()))
        }
        (Surface::Models, None) => Ok(Some("2024-05-01-preview".to_owned())),
        (Surface::Models, Some(v))
            if MODELS_API_VERSIONS.contains(&v) || OPENAI_API_VERSIONS.contains(&v) =>
        {
            Ok(Some(v.to_owned()))
        }
        // The Anthropic surface takes no api-version; one sent anyway is ignored (UNCONFIRMED).
        (Surface::Passthrough | Surface::Anthropic, v) => Ok(v.map(str::to_owned)),
        _ => Err(FoundryError::ApiVersionNotSupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surfaces_are_recognised() {
        let r = route(
            "POST",
            "/openai/deployments/d/chat/completions",
            Some("2024-10-21"),
        )
        .expect("route");
        assert_eq!(
            (r.surface, r.op, r.path_deployment.as_deref()),
            (Surface::Deployments, Op::ChatCompletions, Some("d"))
        );
        assert_eq!(
            route("POST", "/openai/v1/responses", None).expect("v1").op,
            Op::Responses
        );
        assert_eq!(
            route("GET", "/openai/v1/models", None).expect("models").op,
            Op::Models
        );
        assert_eq!(
            route("POST", "/models/embeddings", None)
                .expect("m")
                .surface,
            Surface::Models
        );
        assert_eq!(
            route("POST", "/inference/v1/chat/completions", None)
                .expect("p")
                .surface,
            Surface::Passthrough
        );
    }

    #[test]
    fn project_paths_are_the_v1_surface_without_embeddings() {
        let r = route("POST", "/api/projects/p1/openai/v1/responses", None).expect("project");
        assert_eq!(
            (r.surface, r.op, r.project.as_deref()),
            (Surface::Project, Op::Responses, Some("p1"))
        );
        assert_eq!(
            route(
                "POST",
                "/api/projects/p1/openai/v1/audio/translations",
                None
            )
            .expect("translations")
            .op,
            Op::AudioTranslations
        );
        for path in [
            "/api/projects/p1/openai/v1/embeddings",
            "/api/projects//openai/v1/responses",
            "/api/projects/p1/v1/responses",
            "/api/projects/p1/openai/deployments/d/chat/completions",
        ] {
            assert_eq!(
                route("POST", path, None),
                Err(FoundryError::ResourceNotFound),
                "{path}"
            );
        }
        assert_eq!(
            route(
                "POST",
                "/api/projects/p1/openai/v1/chat/completions",
                Some("2024-10-21")
            ),
            Err(FoundryError::ApiVersionNotSupported)
        );
    }

    #[test]
    fn anthropic_paths() {
        let r = route("POST", "/anthropic/v1/messages", None).expect("messages");
        assert_eq!((r.surface, r.op), (Surface::Anthropic, Op::Messages));
        assert_eq!(
            route("POST", "/anthropic/v1/messages/count_tokens", None)
                .expect("count")
                .op,
            Op::CountTokens
        );
        for path in ["/anthropic/v1/models", "/anthropic/v1/messages/batches"] {
            assert_eq!(
                route("POST", path, None),
                Err(FoundryError::ResourceNotFound),
                "{path}"
            );
        }
    }

    #[test]
    fn api_version_rules() {
        let dep = "/openai/deployments/d/chat/completions";
        assert_eq!(
            route("POST", dep, None),
            Err(FoundryError::ResourceNotFound)
        );
        assert_eq!(
            route("POST", dep, Some("1999-01-01")),
            Err(FoundryError::ApiVersionNotSupported)
        );
        assert_eq!(
            route("POST", "/openai/v1/chat/completions", Some("2024-10-21")),
            Err(FoundryError::ApiVersionNotSupported)
        );
        assert_eq!(
            route("POST", "/openai/deployments/d/nope", Some("2024-10-21")),
            Err(FoundryError::ResourceNotFound)
        );
    }
}
