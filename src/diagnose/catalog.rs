//! The catalog of every refusal foundry-proxy explains: a stable `code`, the status users
//! see, a one-sentence cause and the fix steps.
//!
//! Texts are templates: `{name}` is filled from [`Vars`] when an error is answered (the
//! proxy's error JSON and `foundry-proxy check` both render from here), and shown as
//! `<name>` where no value is known (the troubleshooting table in docs/troubleshooting.md is rendered from
//! this catalog too, and a test keeps the two identical).

use super::RefusalCode;
use std::fmt::Write as _;

/// Where a refusal comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Azure OpenAI / Foundry answered the request.
    Azure,
    /// Entra ID refused or failed to give the proxy a token.
    Entra,
    /// The credential source (a file, the Azure CLI, a managed-identity endpoint) failed.
    Credential,
    /// The proxy itself refused the request.
    Proxy,
}

impl Origin {
    /// The name shown in the troubleshooting table (docs/troubleshooting.md).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Azure => "Azure",
            Self::Entra => "Entra ID",
            Self::Credential => "credential",
            Self::Proxy => "foundry-proxy",
        }
    }
}

/// One catalog entry.
#[derive(Debug)]
pub struct Entry {
    /// Stable machine-readable code (the error JSON's `code`).
    pub code: RefusalCode,
    /// Who refused.
    pub origin: Origin,
    /// The HTTP status the caller gets.
    pub status: u16,
    /// What the user sees (Azure's or Entra's wording, shortened), for docs/troubleshooting.md.
    pub sees: &'static str,
    /// One sentence: the cause (template).
    pub cause: &'static str,
    /// Fix steps, in order (templates).
    pub fix: &'static [&'static str],
}

/// The roles that allow inference with an Entra token, as the portal names them.
pub const INFERENCE_ROLES: &str = "Azure AI User (shown as Foundry User since May 2026), Azure AI Developer, or Cognitive Services OpenAI User";

const IAM_STEP: &str =
    "Azure portal → resource '{resource}' → Access control (IAM) → Add → Add role assignment.";
const MEMBER_STEP: &str = "Members: 'User, group, or service principal' → Select members → search for your App Registration by name or by client id {client_id} → Review + assign.";
const NO_API_PERMISSIONS: &str = "No API permissions are needed in the App Registration: Azure checks the role assignment at the resource.";
const WAIT_STEP: &str =
    "Wait up to 10 minutes for a new assignment to apply; the proxy needs no restart.";
const CLI_STEP: &str = "Or: az role assignment create --assignee-object-id {object_id} --assignee-principal-type ServicePrincipal --role 53ca6127-db72-4b80-b1b0-d745d6d5456d --scope $(az cognitiveservices account show --name {resource} --resource-group <resource-group> --query id -o tsv)   # 53ca6127-… is Azure AI User (Foundry User)";

/// Every refusal foundry-proxy explains.
pub const CATALOG: &[Entry] = &[
    // Azure OpenAI / Foundry refusals.
    Entry {
        code: RefusalCode::MissingRoleAssignment,
        origin: Origin::Azure,
        status: 401,
        sees: "401 PermissionDenied: the principal lacks the required data action",
        cause: "The app's service principal (object id {object_id}) has no role on {endpoint_host} that allows inference{lacks}; assign it Azure AI User (Foundry User), Azure AI Developer or Cognitive Services OpenAI User in the resource's Access control (IAM), which takes up to 10 minutes to apply.{recent}",
        fix: &[
            IAM_STEP,
            "Role: Azure AI User (shown as Foundry User since May 2026), Azure AI Developer, or Cognitive Services OpenAI User. Owner, Contributor and Cognitive Services Contributor are not enough: they grant no data actions.",
            MEMBER_STEP,
            NO_API_PERMISSIONS,
            WAIT_STEP,
            CLI_STEP,
        ],
    },
    Entry {
        code: RefusalCode::MissingResponsesPermission,
        origin: Origin::Azure,
        status: 401,
        sees: "401 PermissionDenied on /responses: lacks …/OpenAI/responses/write",
        cause: "The Responses API needs its own data action (Microsoft.CognitiveServices/accounts/OpenAI/responses/write), which the service principal (object id {object_id}) lacks on {endpoint_host}; Azure AI User (Foundry User) and Azure AI Developer include it, Cognitive Services OpenAI User does not.{recent}",
        fix: &[
            IAM_STEP,
            "Role: Azure AI User (shown as Foundry User) or Azure AI Developer. Owner and Contributor grant no data actions.",
            MEMBER_STEP,
            WAIT_STEP,
            CLI_STEP,
        ],
    },
    Entry {
        code: RefusalCode::TokenWrongTenant,
        origin: Origin::Azure,
        status: 400,
        sees: "400 Token tenant … does not match resource tenant",
        cause: "The token comes from tenant {token_tenant}, but {endpoint_host} belongs to another tenant; the App Registration must live in the resource's own tenant.",
        fix: &[
            "Find the resource's tenant: Azure portal → the resource → Overview → JSON View (or the directory switcher while viewing it).",
            "Set AZURE_TENANT_ID to that tenant's Directory (tenant) ID, and use an App Registration from that tenant (AZURE_CLIENT_ID, AZURE_CLIENT_SECRET).",
        ],
    },
    Entry {
        code: RefusalCode::MissingProjectPermission,
        origin: Origin::Azure,
        status: 401,
        sees: "401 PermissionDenied on a project endpoint: lacks …/AIServices/agents/write",
        cause: "The Foundry project's OpenAI routes need the data action Microsoft.CognitiveServices/accounts/AIServices/agents/write, which the service principal (object id {object_id}) lacks; assign it Azure AI User (Foundry User) on the project or on the resource '{resource}' — Cognitive Services OpenAI User and Azure AI Developer do not include it.{recent}",
        fix: &[
            "Azure portal → the Foundry project (or the resource '{resource}') → Access control (IAM) → Add → Add role assignment → Azure AI User (shown as Foundry User).",
            MEMBER_STEP,
            NO_API_PERMISSIONS,
            WAIT_STEP,
        ],
    },
    Entry {
        code: RefusalCode::TokenWrongAudience,
        origin: Origin::Azure,
        status: 401,
        sees: "401 Unauthorized: audience is incorrect (the token is for another resource or cloud)",
        cause: "The proxy's token is for '{audience}', but {endpoint_host} accepts only tokens for {expected_audience}.",
        fix: &[
            "Set FOUNDRY_SCOPE to {expected_scope}, or unset it to use the default.",
            "Match the endpoint: a Foundry project endpoint (…/api/projects/NAME) needs https://ai.azure.com/.default; a resource's own endpoints accept https://cognitiveservices.azure.com/.default and https://ai.azure.com/.default; US Government uses https://cognitiveservices.azure.us/.default, Azure China https://cognitiveservices.azure.cn/.default.",
        ],
    },
    Entry {
        code: RefusalCode::TokenExpired,
        origin: Origin::Azure,
        status: 401,
        sees: "401 Unauthorized: … or have expired",
        cause: "Azure judged the proxy's token expired or not yet valid (expiry {expires_at}); the proxy renews tokens at half their lifetime, so this points to a wrong clock on this machine or refreshes that keep failing.",
        fix: &[
            "Check the system clock: timedatectl status (enable NTP); in a container, the host's clock.",
            "Check /readyz and the logs for 'token refresh failed'.",
        ],
    },
    Entry {
        code: RefusalCode::TokenRejected,
        origin: Origin::Azure,
        status: 401,
        sees: "401 Unauthorized although the token is unexpired and for the right audience",
        cause: "{endpoint_host} rejected the proxy's token although it is unexpired and for the right audience: the endpoint may belong to another cloud than the authority {authority}, or not accept Entra tokens.",
        fix: &[
            "Use the resource's custom-subdomain endpoint (https://NAME.openai.azure.com or https://NAME.services.ai.azure.com): regional endpoints accept only API keys.",
            "Make sure AZURE_AUTHORITY_HOST is the authority of the endpoint's cloud.",
        ],
    },
    Entry {
        code: RefusalCode::CustomSubdomainRequired,
        origin: Origin::Azure,
        status: 400,
        sees: "400 Please provide a custom subdomain for token authentication",
        cause: "{endpoint_host} is a regional endpoint, which accepts only API keys; Entra tokens need the resource's own custom-subdomain endpoint.",
        fix: &[
            "Set FOUNDRY_ENDPOINT to the resource's endpoint from Azure portal → the resource → Keys and Endpoint, e.g. https://NAME.openai.azure.com or https://NAME.services.ai.azure.com.",
            "A resource created without a custom subdomain needs one: Azure portal → the resource → Networking, or az cognitiveservices account update --custom-domain NAME.",
        ],
    },
    Entry {
        code: RefusalCode::KeyAuthDisabled,
        origin: Origin::Azure,
        status: 403,
        sees: "403 AuthenticationTypeDisabled: Key based authentication is disabled",
        cause: "{endpoint_host} accepts only Entra ID tokens, but the request reached it as an API-key request: something between the proxy and Azure (API Management, another gateway) replaced the token with a key.",
        fix: &[
            "Point FOUNDRY_ENDPOINT at the resource itself (https://NAME.openai.azure.com or https://NAME.services.ai.azure.com), or make the gateway forward the Authorization header.",
        ],
    },
    Entry {
        code: RefusalCode::ApiKeyExpected,
        origin: Origin::Azure,
        status: 401,
        sees: "401 Access denied due to invalid subscription key or wrong API endpoint",
        cause: "{endpoint_host} answered as if it expected an API key: it is a regional endpoint or a gateway that does not accept Entra tokens.",
        fix: &[
            "Set FOUNDRY_ENDPOINT to the resource's custom-subdomain endpoint (Azure portal → the resource → Keys and Endpoint).",
        ],
    },
    Entry {
        code: RefusalCode::NetworkRules,
        origin: Origin::Azure,
        status: 403,
        sees: "403 Access denied due to Virtual Network/Firewall rules",
        cause: "The resource's network rules refuse this machine's address: {azure_message}",
        fix: &[
            "Azure portal → resource '{resource}' → Networking → Firewalls and virtual networks: add this machine's public IP address or its virtual network.",
            "Or run the proxy inside a network the resource allows.",
        ],
    },
    Entry {
        code: RefusalCode::PrivateEndpointRequired,
        origin: Origin::Azure,
        status: 403,
        sees: "403 Traffic is not from an approved private endpoint / A Virtual Network is configured for this resource",
        cause: "The resource accepts traffic only through its private endpoint, and this request came another way: {azure_message}",
        fix: &[
            "Run the proxy in the virtual network (or a peered one, or over VPN) where the resource's private endpoint is, so {endpoint_host} resolves to the private address.",
            "Check DNS: nslookup {endpoint_host} must return the private endpoint's address (privatelink zone).",
            "Or allow public access for selected networks: Azure portal → the resource → Networking.",
        ],
    },
    Entry {
        code: RefusalCode::DeploymentNotFound,
        origin: Origin::Azure,
        status: 404,
        sees: "404 DeploymentNotFound",
        cause: "{endpoint_host} has no deployment named '{deployment}': `model` takes the deployment name you chose in Foundry, which can differ from the model's name, and a deployment created in the last 5 minutes may not be ready yet.",
        fix: &[
            "List the deployments: Foundry portal → Models + endpoints (or Azure OpenAI → Deployments), or az cognitiveservices account deployment list --name {resource} --resource-group <resource-group>.",
            "Use the Deployment name column as `model` (or map a friendly name to it in the [models] table of the config file).",
            "Just created it? Wait a few minutes and retry.",
        ],
    },
    Entry {
        code: RefusalCode::ApiNotSupported,
        origin: Origin::Azure,
        status: 404,
        sees: "404 api_not_supported: Requested API is currently not supported",
        cause: "{endpoint_host} does not serve this API for '{deployment}': Claude deployments answer only on the Anthropic Messages API, not on chat/completions or responses.",
        fix: &[
            "Call Claude through the Messages API: point the Anthropic SDK at the proxy (ANTHROPIC_BASE_URL=http://127.0.0.1:8080) or Claude Code at http://127.0.0.1:8080/anthropic.",
            "Or use a deployment of an OpenAI-family model on this route.",
        ],
    },
    Entry {
        code: RefusalCode::DeploymentQuotaExceeded,
        origin: Origin::Azure,
        status: 429,
        sees: "429 … exceeded token rate limit … (your deployment's quota)",
        cause: "The deployment '{deployment}' on {endpoint_host} is over its own quota (tokens or requests per minute): {azure_message}",
        fix: &[
            "Wait for retry-after and retry (OpenAI SDKs do it by themselves), or raise the deployment's quota: Foundry portal → Models + endpoints → the deployment → Edit → Tokens per Minute Rate Limit.",
            "Or spread the load over another deployment or region (several upstreams in the config file).",
        ],
    },
    Entry {
        code: RefusalCode::AzureCapacityExceeded,
        origin: Origin::Azure,
        status: 429,
        sees: "429 The system is currently experiencing high demand …",
        cause: "Azure has no capacity for '{deployment}' on {endpoint_host} right now (high demand in the region, not your quota): {azure_message}",
        fix: &[
            "Retry later (after retry-after); raising your quota does not help.",
            "Or send the traffic to a deployment in another region, or to provisioned throughput (PTU).",
        ],
    },
    Entry {
        code: RefusalCode::UnknownModel,
        origin: Origin::Azure,
        status: 404,
        sees: "404 unknown_model (Foundry Models endpoint)",
        cause: "The Foundry Models endpoint has no deployment named '{deployment}'; `model` must be a deployment name in this resource.",
        fix: &["Foundry portal → Models + endpoints: use the deployment's name as `model`."],
    },
    Entry {
        code: RefusalCode::ResourceNotFound,
        origin: Origin::Azure,
        status: 404,
        sees: "404 Resource not found",
        cause: "{endpoint_host} has no such route: the endpoint URL, the API style ({api}) or the api-version do not fit this resource.",
        fix: &[
            "Check FOUNDRY_ENDPOINT is the resource's base URL (https://NAME.openai.azure.com), without /openai/deployments/… .",
            "Check FOUNDRY_API: openai-v1 for the v1 API, deployments for the classic API (needs an api-version), models for …/models endpoints, passthrough for serverless endpoints.",
        ],
    },
    Entry {
        code: RefusalCode::ApiVersionNotSupported,
        origin: Origin::Azure,
        status: 400,
        sees: "400 API version not supported",
        cause: "{endpoint_host} does not serve api-version '{api_version}'.",
        fix: &[
            "{version_fix} (2024-10-21 is the latest dated GA; previews end in -preview); with FOUNDRY_API_VERSION unset the proxy sends the style's default.",
            "With the v1 API (FOUNDRY_API=openai-v1) no api-version is needed.",
        ],
    },
    Entry {
        code: RefusalCode::ApiVersionTooOld,
        origin: Origin::Azure,
        status: 400,
        sees: "400 Model … is enabled only for api versions … and later",
        cause: "The model behind this deployment needs a newer api-version than '{api_version}': {azure_message}",
        fix: &[
            "{version_fix}: the version Azure names, or later.",
            "Or use the v1 API (FOUNDRY_API=openai-v1), which needs no api-version.",
        ],
    },
    Entry {
        code: RefusalCode::ParameterNotSupported,
        origin: Origin::Azure,
        status: 422,
        sees: "422 parameter_not_supported (Foundry Models endpoint)",
        cause: "The model does not support a parameter the request sent ({azure_message}).",
        fix: &[
            "Remove the parameter from the request, or send the header extra-parameters: drop to have Azure ignore unknown parameters (pass-through sends them to the model as they are).",
        ],
    },
    Entry {
        code: RefusalCode::UpstreamRefused,
        origin: Origin::Azure,
        status: 403,
        sees: "another 401/403 from Azure (its body is kept under `upstream`)",
        cause: "{endpoint_host} refused the request ({status}): {azure_message}",
        fix: &[
            "Check that app {client_id} (tenant {tenant_id}) has a data-plane role on the resource: Access control (IAM) → Role assignments.",
            "A 403 often comes from the resource's network rules: Networking → Firewalls and virtual networks.",
            "Run foundry-proxy check for a step-by-step diagnosis.",
        ],
    },
    // Entra ID refusals.
    Entry {
        code: RefusalCode::InvalidClientSecret,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS7000215 Invalid client secret provided",
        cause: "Entra ID rejected the client secret of app {client_id} (AADSTS7000215): AZURE_CLIENT_SECRET is not a valid secret value — often the Secret ID was copied instead of the Value.",
        fix: &[
            "App Registration → Certificates & secrets → Client secrets: the Value is shown only right after creation; the Secret ID (a GUID) is not the secret.",
            "If the value is lost, create a new client secret and set AZURE_CLIENT_SECRET to its Value.",
        ],
    },
    Entry {
        code: RefusalCode::ClientSecretExpired,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS7000222 The provided client secret keys … are expired",
        cause: "The client secret of app {client_id} has expired (AADSTS7000222).",
        fix: &[
            "App Registration → Certificates & secrets → New client secret; set AZURE_CLIENT_SECRET to its Value.",
            "Delete the expired secret and note the new one's expiry date.",
        ],
    },
    Entry {
        code: RefusalCode::UnknownClientId,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS700016 Application with identifier … was not found in the directory",
        cause: "Entra ID has no application {client_id} in tenant {tenant_id} (AADSTS700016).",
        fix: &[
            "Set AZURE_CLIENT_ID to the Application (client) ID on the App Registration's Overview page (not its Object ID).",
            "Set AZURE_TENANT_ID to the Directory (tenant) ID on that same page.",
        ],
    },
    Entry {
        code: RefusalCode::UnknownTenant,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS90002 Tenant … not found",
        cause: "Entra ID at {authority} does not know tenant '{tenant_id}' (AADSTS90002).",
        fix: &[
            "Set AZURE_TENANT_ID to the Directory (tenant) ID on the App Registration's Overview page.",
            "For US Government set AZURE_AUTHORITY_HOST=https://login.microsoftonline.us; for Azure China, https://login.chinacloudapi.cn.",
        ],
    },
    Entry {
        code: RefusalCode::InvalidScope,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS70011 The provided value for the input parameter 'scope' is not valid",
        cause: "Entra ID refused the scope '{scope}' (AADSTS70011).",
        fix: &[
            "Set FOUNDRY_SCOPE to one resource followed by /.default, e.g. https://cognitiveservices.azure.com/.default, or unset it.",
        ],
    },
    Entry {
        code: RefusalCode::UnknownResource,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS500011 The resource principal named … was not found in the tenant",
        cause: "The resource in scope '{scope}' does not exist in tenant {tenant_id} (AADSTS500011).",
        fix: &[
            "Use your cloud's scope: https://cognitiveservices.azure.com/.default (public), https://cognitiveservices.azure.us/.default (US Government), https://cognitiveservices.azure.cn/.default (China).",
        ],
    },
    Entry {
        code: RefusalCode::ScopeMultipleResources,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS700022 The provided value for the input parameter scope is not valid because it contains more than one resource",
        cause: "The scope '{scope}' names more than one resource (AADSTS700022).",
        fix: &["Set FOUNDRY_SCOPE to exactly one resource followed by /.default."],
    },
    Entry {
        code: RefusalCode::MissingClientCredential,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS7000218 The request body must contain … 'client_assertion' or 'client_secret'",
        cause: "The token request carried no client secret or assertion (AADSTS7000218).",
        fix: &["Set AZURE_CLIENT_SECRET to the secret's Value."],
    },
    Entry {
        code: RefusalCode::CertificateNotRegistered,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS700027 Client assertion contains an invalid signature",
        cause: "Entra ID could not verify the client assertion of app {client_id} (AADSTS700027): the certificate is not uploaded to the App Registration, or the private key does not match it.",
        fix: &[
            "App Registration → Certificates & secrets → Certificates → Upload certificate: upload the public certificate (.cer/.pem) whose private key the proxy uses.",
            "Check the thumbprint Entra names against the certificate in AZURE_CLIENT_CERTIFICATE_PATH.",
        ],
    },
    Entry {
        code: RefusalCode::AssertionTimeInvalid,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS700024 Client assertion is not within its valid time range",
        cause: "Entra ID refused the client assertion as outside its valid time range (AADSTS700024): this machine's clock is off, or the federated token file is stale.",
        fix: &[
            "Check the system clock (timedatectl status; enable NTP).",
            "With workload identity, check that the projected token file (AZURE_FEDERATED_TOKEN_FILE) is being renewed by the kubelet.",
        ],
    },
    Entry {
        code: RefusalCode::FederatedCredentialMismatch,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS70021 No matching federated identity record found for presented assertion",
        cause: "No federated identity credential on app {client_id} matches the presented token's issuer, subject and audience (AADSTS70021): {entra_message}",
        fix: &[
            "App Registration (or the managed identity) → Certificates & secrets → Federated credentials: add one whose issuer, subject (e.g. system:serviceaccount:NAMESPACE:NAME) and audience (api://AzureADTokenExchange) match exactly.",
            "On AKS, the issuer is az aks show --query oidcIssuerProfile.issuerUrl.",
        ],
    },
    Entry {
        code: RefusalCode::MissingParameter,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS900144 The request body must contain the following parameter",
        cause: "Entra ID says a required parameter is missing (AADSTS900144): {entra_message}",
        fix: &["Check AZURE_CLIENT_ID and FOUNDRY_SCOPE are set and not empty."],
    },
    Entry {
        code: RefusalCode::TenantSpecificEndpointRequired,
        origin: Origin::Entra,
        status: 401,
        sees: "AADSTS9001023 The grant type isn't supported over the /common or /consumers endpoints",
        cause: "App-only tokens need a tenant-specific authority, not /common or /consumers (AADSTS9001023).",
        fix: &["Set AZURE_TENANT_ID to your Directory (tenant) ID."],
    },
    Entry {
        code: RefusalCode::EntraRefused,
        origin: Origin::Entra,
        status: 401,
        sees: "any other AADSTS error",
        cause: "Entra ID refused the credential: {entra_message}",
        fix: &[
            "Look the AADSTS code up at https://login.microsoftonline.com/error and check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for app {client_id}.",
        ],
    },
    Entry {
        code: RefusalCode::EntraUnavailable,
        origin: Origin::Entra,
        status: 503,
        sees: "503 with retry-after: Entra ID unreachable or failing, and no valid token left",
        cause: "The proxy holds no valid token and cannot get one from Entra ID at {authority}: {detail}. It retries with backoff.",
        fix: &[
            "Check network access from this machine to the authority (proxy, firewall, DNS).",
            "If AZURE_AUTHORITY_HOST is set, check it is the right cloud's authority.",
        ],
    },
    // Credential sources.
    Entry {
        code: RefusalCode::SecretFileUnreadable,
        origin: Origin::Credential,
        status: 401,
        sees: "AZURE_CLIENT_SECRET_FILE cannot be read or is empty",
        cause: "The client secret file cannot be used: {detail}.",
        fix: &[
            "Point AZURE_CLIENT_SECRET_FILE at a readable file holding the secret's Value (mounted secrets: check the volume and its permissions).",
        ],
    },
    Entry {
        code: RefusalCode::CertificateUnreadable,
        origin: Origin::Credential,
        status: 401,
        sees: "AZURE_CLIENT_CERTIFICATE_PATH cannot be read, opened or used",
        cause: "The client certificate cannot be used: {detail}.",
        fix: &[
            "AZURE_CLIENT_CERTIFICATE_PATH must be a PEM file with the certificate and its RSA private key, or a PKCS#12 (.pfx/.p12) file.",
            "For PKCS#12, set AZURE_CLIENT_CERTIFICATE_PASSWORD to its password.",
        ],
    },
    Entry {
        code: RefusalCode::FederatedTokenUnreadable,
        origin: Origin::Credential,
        status: 503,
        sees: "AZURE_FEDERATED_TOKEN_FILE cannot be read or is empty",
        cause: "The federated token file cannot be used: {detail}.",
        fix: &[
            "On AKS, label the pod azure.workload.identity/use: \"true\" and annotate its service account with azure.workload.identity/client-id, so the webhook projects the token.",
            "Check that AZURE_FEDERATED_TOKEN_FILE points at the projected token (/var/run/secrets/azure/tokens/azure-identity-token).",
        ],
    },
    Entry {
        code: RefusalCode::ManagedIdentityUnavailable,
        origin: Origin::Credential,
        status: 503,
        sees: "503: the managed identity endpoint is unreachable or failing",
        cause: "No token from the managed identity endpoint: {detail}.",
        fix: &[
            "Run the proxy on an Azure resource with a managed identity (VM, scale set, App Service, Container Apps, AKS node), or choose another FOUNDRY_CREDENTIAL.",
            "On a VM: the resource → Identity → System assigned → On (or add a user-assigned identity).",
        ],
    },
    Entry {
        code: RefusalCode::ManagedIdentityNotFound,
        origin: Origin::Credential,
        status: 401,
        sees: "400 from IMDS/App Service: identity not found",
        cause: "The managed identity asked for is not assigned to this resource: {detail}.",
        fix: &[
            "The resource → Identity: turn on the system-assigned identity, or add the user-assigned identity.",
            "For a user-assigned identity, set AZURE_CLIENT_ID to its Client ID (or FOUNDRY_MANAGED_IDENTITY_OBJECT_ID / FOUNDRY_MANAGED_IDENTITY_RESOURCE_ID).",
        ],
    },
    Entry {
        code: RefusalCode::ManagedIdentityRefused,
        origin: Origin::Credential,
        status: 401,
        sees: "401/403 from the identity endpoint",
        cause: "The managed identity endpoint refused the request: {detail}.",
        fix: &[
            "App Service and Container Apps: pass IDENTITY_ENDPOINT and IDENTITY_HEADER through to the proxy unchanged (the header rotates with the app).",
        ],
    },
    Entry {
        code: RefusalCode::AzureCliMissing,
        origin: Origin::Credential,
        status: 401,
        sees: "the Azure CLI (az) is not installed",
        cause: "The Azure CLI credential needs az, which is not installed or not on PATH.",
        fix: &["Install the Azure CLI and run az login, or choose another FOUNDRY_CREDENTIAL."],
    },
    Entry {
        code: RefusalCode::AzureCliLoggedOut,
        origin: Origin::Credential,
        status: 401,
        sees: "Please run 'az login' to setup account",
        cause: "The Azure CLI is not signed in: {detail}.",
        fix: &[
            "Run az login (add --tenant <tenant_id> for a specific tenant); the proxy picks the account up at its next refresh.",
        ],
    },
    Entry {
        code: RefusalCode::AzureCliFailed,
        origin: Origin::Credential,
        status: 503,
        sees: "az account get-access-token failed",
        cause: "The Azure CLI could not get a token: {detail}.",
        fix: &["Run az account get-access-token --scope {scope} yourself to see the full error."],
    },
    // The proxy's own refusals.
    Entry {
        code: RefusalCode::InvalidApiKey,
        origin: Origin::Proxy,
        status: 401,
        sees: "401 when access keys are configured and the request has no valid key",
        cause: "This proxy requires an access key, and the request carried none or an unknown one.",
        fix: &[
            "Send your key as the OpenAI SDKs do: OPENAI_API_KEY=<your key> (Authorization: Bearer …), or the api-key header.",
            "Ask the proxy's operator for a key: foundry-proxy keys add <name>.",
        ],
    },
    Entry {
        code: RefusalCode::AdminKeyRequired,
        origin: Origin::Proxy,
        status: 403,
        sees: "403 when a member key asks for /metrics on the main listener",
        cause: "Key '{detail}' is a member key: it sees its own usage, limits and budgets on /status, but {what} is for admin keys only (it shows every key and the proxy's configuration).",
        fix: &[
            "Read your own standing with GET /status or `foundry-proxy usage` using this key.",
            "Operators: use an admin key (foundry-proxy keys add NAME --admin, or role = \"admin\" in the keys file), or scrape the separate metrics listener (FOUNDRY_PROXY_METRICS_LISTEN).",
        ],
    },
    Entry {
        code: RefusalCode::KeyExpired,
        origin: Origin::Proxy,
        status: 401,
        sees: "401 for a key past its expires date",
        cause: "Key '{detail}' expired at {what} (its expires field in the keys file); nothing was forwarded.",
        fix: &[
            "Ask the proxy's operator for a new key, or for a later expires date on this one (keys are reloaded within seconds).",
        ],
    },
    Entry {
        code: RefusalCode::ModelNotAllowed,
        origin: Origin::Proxy,
        status: 403,
        sees: "403 for a model outside the key's models list",
        cause: "Key '{detail}' may not use the model {what}; nothing was forwarded.",
        fix: &[
            "Use one of the models the key allows: {limit}.",
            "Or ask the operator to add the model to this key's models list in the keys file.",
        ],
    },
    Entry {
        code: RefusalCode::BudgetExhausted,
        origin: Origin::Proxy,
        status: 429,
        sees: "429 with retry-after: the key's daily or monthly budget is spent",
        cause: "Key '{detail}' has used its budget of {limit}; it resets in retry-after seconds ({what}).",
        fix: &[
            "Wait until the budget resets (retry-after), or ask the operator to raise it in the keys file (tokens_per_day, tokens_per_month, usd_per_month).",
            "Your standing, with what is left and when it resets, is on GET /status with your key.",
        ],
    },
    Entry {
        code: RefusalCode::RateLimitExceeded,
        origin: Origin::Proxy,
        status: 429,
        sees: "429 with retry-after: the key's requests per minute are used up",
        cause: "Key '{detail}' has used its {limit} requests per minute; retry after the time in retry-after.",
        fix: &[
            "Wait for retry-after seconds, or ask the operator to raise requests_per_minute for this key in the keys file.",
        ],
    },
    Entry {
        code: RefusalCode::TokenLimitExceeded,
        origin: Origin::Proxy,
        status: 429,
        sees: "429 with retry-after: the key's tokens per minute are used up",
        cause: "Key '{detail}' has used its {limit} tokens per minute; retry after the time in retry-after.",
        fix: &[
            "Wait for retry-after seconds, or ask the operator to raise tokens_per_minute for this key in the keys file.",
        ],
    },
    Entry {
        code: RefusalCode::RedisUnavailable,
        origin: Origin::Proxy,
        status: 503,
        sees: "503 with retry-after: Redis (FOUNDRY_PROXY_REDIS_URL) cannot be reached and FOUNDRY_PROXY_REDIS_FAILURE=closed",
        cause: "Key '{detail}' has limits or budgets shared through Redis at {what}, which does not answer; the proxy is set to refuse rather than count without it (FOUNDRY_PROXY_REDIS_FAILURE=closed).",
        fix: &[
            "Retry after retry-after seconds: the proxy reconnects by itself, and foundry_proxy_redis_up on /metrics turns 1 when it has.",
            "Operator: check that Redis runs and that the URL, password and TLS (rediss://) match; or set FOUNDRY_PROXY_REDIS_FAILURE=open to fall back to each replica's own limits while Redis is away.",
        ],
    },
    Entry {
        code: RefusalCode::TokenPending,
        origin: Origin::Proxy,
        status: 503,
        sees: "503 with retry-after: 1 right after start",
        cause: "The proxy is still getting its first token from Entra ID.",
        fix: &["Retry in a moment; if it lasts, read /readyz and the logs."],
    },
    Entry {
        code: RefusalCode::TokenRenewalPending,
        origin: Origin::Proxy,
        status: 503,
        sees: "503 with retry-after: 1",
        cause: "The proxy's token expired before its renewal was due: Entra issues tokens too short-lived to use.",
        fix: &["Retry in a moment; check the token lifetime policy of the tenant."],
    },
    Entry {
        code: RefusalCode::UnknownPath,
        origin: Origin::Proxy,
        status: 404,
        sees: "404 for a path no client dialect uses",
        cause: "foundry-proxy does not serve '{detail}': it serves the OpenAI API under /v1/, the Azure OpenAI paths under /openai/, Anthropic's Messages API for Claude (/v1/messages, /anthropic/v1/), and /healthz, /readyz, /status, /metrics.",
        fix: &[
            "OpenAI clients: base URL http://HOST:PORT/v1 (OPENAI_BASE_URL); Azure OpenAI clients: azure_endpoint=http://HOST:PORT (AZURE_OPENAI_ENDPOINT) with any api_version and api_key, or base URL http://HOST:PORT/openai/v1; Anthropic clients: ANTHROPIC_BASE_URL=http://HOST:PORT, or the Foundry base URL http://HOST:PORT/anthropic.",
        ],
    },
    Entry {
        code: RefusalCode::HostNotAllowed,
        origin: Origin::Proxy,
        status: 403,
        sees: "403 for a Host (or HTTP/2 :authority) that does not name the proxy",
        cause: "The request names the host '{detail}', which is not this proxy: a web page reaching the proxy through a name of its own (DNS rebinding) is refused, and nothing was forwarded.",
        fix: &[
            "Call the proxy as http://127.0.0.1:PORT or http://localhost:PORT.",
            "If other names reach it on purpose (a Kubernetes service, a container name, a port forwarded to another number), list them in FOUNDRY_PROXY_ALLOWED_HOSTS, comma-separated: NAME (any port), NAME:PORT or *.DOMAIN.",
        ],
    },
    Entry {
        code: RefusalCode::OriginNotAllowed,
        origin: Origin::Proxy,
        status: 403,
        sees: "403 for a request from a web page whose origin is not allowed",
        cause: "The request comes from a web page (Origin: {detail}) that is not allowed to use this proxy's Azure identity; nothing was forwarded.",
        fix: &[
            "If the page is a tool you trust, list its origin in FOUNDRY_PROXY_CORS_ORIGINS, e.g. http://localhost:3000 (scheme://host[:port]).",
            "SDKs, curl and servers send no Origin and need nothing: only browsers are checked.",
        ],
    },
    Entry {
        code: RefusalCode::InvalidPath,
        origin: Origin::Proxy,
        status: 400,
        sees: "400 for paths with .., //, encoded slashes or dots, '@', ';', bad escapes, control characters or raw non-ASCII",
        cause: "The path '{detail}' is not allowed: it could escape the upstream route, or be read differently on the way.",
        fix: &["Use the OpenAI API paths as they are, e.g. /v1/chat/completions."],
    },
    Entry {
        code: RefusalCode::MethodNotAllowed,
        origin: Origin::Proxy,
        status: 405,
        sees: "405 for a method the API does not use (TRACE, CONNECT, FOO, …)",
        cause: "The method '{detail}' is not forwarded: the proxy passes GET, HEAD, POST, PUT, PATCH, DELETE and OPTIONS.",
        fix: &["Use the method the OpenAI API documents for the path (POST or GET for most)."],
    },
    Entry {
        code: RefusalCode::WebSocketNotSupported,
        origin: Origin::Proxy,
        status: 426,
        sees: "426 for a WebSocket upgrade the proxy cannot serve (a route without WebSocket mode, or the models / passthrough style)",
        cause: "WebSocket upgrades are served on /v1/realtime?model=DEPLOYMENT and /v1/responses (and their Azure paths) with FOUNDRY_API openai-v1, project or deployments; {detail}",
        fix: &[
            "Use HTTP for this route (clients such as Codex fall back to HTTP on this 426 by themselves).",
            "For realtime, point the client at ws://HOST:PORT/v1/realtime?model=DEPLOYMENT with an openai-v1, project or deployments endpoint.",
        ],
    },
    Entry {
        code: RefusalCode::MissingModel,
        origin: Origin::Proxy,
        status: 400,
        sees: "400: the request has no 'model' (deployments style)",
        cause: "The request has no 'model'; with FOUNDRY_API=deployments the proxy needs it to choose the deployment.",
        fix: &["Send the deployment name as `model`."],
    },
    Entry {
        code: RefusalCode::InvalidModel,
        origin: Origin::Proxy,
        status: 400,
        sees: "400: 'model' is not a valid deployment name (deployments style)",
        cause: "'{detail}' is not a valid deployment name (letters, digits, '-', '_' and '.', not starting with '.', at most 64).",
        fix: &["Send the deployment name exactly as shown in the Foundry portal."],
    },
    Entry {
        code: RefusalCode::InvalidJson,
        origin: Origin::Proxy,
        status: 400,
        sees: "400: the body is not valid JSON (deployments style)",
        cause: "The request body is not valid JSON ({detail}); the proxy needs its 'model' to choose the deployment.",
        fix: &["Send a JSON object with a 'model' field."],
    },
    Entry {
        code: RefusalCode::InvalidMultipart,
        origin: Origin::Proxy,
        status: 400,
        sees: "400: the multipart body cannot be read (deployments style)",
        cause: "The multipart request cannot be read to find its 'model' field ({detail}).",
        fix: &["Send multipart/form-data with a boundary and a 'model' field."],
    },
    Entry {
        code: RefusalCode::UnreadableBody,
        origin: Origin::Proxy,
        status: 400,
        sees: "400: the request body could not be read",
        cause: "The request body could not be read: {detail}.",
        fix: &["Retry; check the client sends a complete body."],
    },
    Entry {
        code: RefusalCode::RequestBodyTimeout,
        origin: Origin::Proxy,
        status: 408,
        sees: "408: the request body stopped arriving",
        cause: "The request body stopped arriving: no data for {detail} s before it was complete.",
        fix: &[
            "Check that the client sends the whole body it announces (Content-Length, or a final chunk) without pausing.",
        ],
    },
    Entry {
        code: RefusalCode::RequestTooLarge,
        origin: Origin::Proxy,
        status: 413,
        sees: "413",
        cause: "The request body is larger than the proxy's limit of {max_body} bytes (FOUNDRY_PROXY_MAX_BODY).",
        fix: &["Send a smaller body, or raise FOUNDRY_PROXY_MAX_BODY."],
    },
    Entry {
        code: RefusalCode::UpstreamUnreachable,
        origin: Origin::Proxy,
        status: 502,
        sees: "502: the endpoint cannot be reached",
        cause: "The proxy could not get an answer from {endpoint_host}: {detail}.",
        fix: &[
            "Check FOUNDRY_ENDPOINT and network access from this machine to it (DNS, firewall, proxy, private endpoint, TLS certificates: SSL_CERT_FILE).",
        ],
    },
    Entry {
        code: RefusalCode::UpstreamTimeout,
        origin: Origin::Proxy,
        status: 504,
        sees: "504: no response headers in time",
        cause: "{endpoint_host} sent no response headers within {detail} s (FOUNDRY_PROXY_UPSTREAM_TIMEOUT).",
        fix: &[
            "Raise FOUNDRY_PROXY_UPSTREAM_TIMEOUT for long non-streaming completions, or use stream: true.",
        ],
    },
    Entry {
        code: RefusalCode::UpstreamsResting,
        origin: Origin::Proxy,
        status: 429,
        sees: "429: every upstream target is resting",
        cause: "Every target for this model is resting after a 429 or repeated failures: {detail}. The first one is back in {wait_ms} ms.",
        fix: &[
            "Retry after the time in retry-after-ms (or retry-after).",
            "Add another [[upstream]] target for this model (another region or a pay-as-you-go deployment), or raise the deployments' quota.",
            "For clients that retry badly, set max_wait so the proxy waits for short rests itself.",
        ],
    },
];

/// The entry for `code`. Every code has one (`every_code_has_one_entry`); were one missing,
/// debug builds would panic and release builds fall back to the generic `upstream_refused`.
pub fn entry(code: RefusalCode) -> &'static Entry {
    let found = CATALOG.iter().find(|e| e.code == code);
    debug_assert!(found.is_some(), "code {code} is not in the catalog");
    found.unwrap_or_else(|| {
        CATALOG
            .iter()
            .find(|e| e.code == RefusalCode::UpstreamRefused)
            .unwrap_or(&CATALOG[0])
    })
}

/// Values for the `{name}` placeholders of a template.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    pairs: Vec<(&'static str, String)>,
}

impl Vars {
    /// No values: every placeholder renders as `<name>`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name`; an empty value renders as empty text.
    pub fn set(mut self, name: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        match self.pairs.iter_mut().find(|(n, _)| *n == name) {
            Some(pair) => pair.1 = value,
            None => self.pairs.push((name, value)),
        }
        self
    }

    /// Sets `name` when a value is known.
    pub fn maybe(self, name: &'static str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(value) => self.set(name, value),
            None => self,
        }
    }

    /// Renders a template.
    pub fn render(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 64);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find('}') {
                Some(close)
                    if after[..close]
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_') =>
                {
                    let name = &after[..close];
                    match self.pairs.iter().find(|(n, _)| *n == name) {
                        Some((_, value)) => out.push_str(value),
                        None => {
                            let _ = write!(out, "<{name}>");
                        }
                    }
                    rest = &after[close + 1..];
                    // A value that ends a sentence itself: no double full stop.
                    if out.ends_with('.') && rest.starts_with('.') {
                        rest = &rest[1..];
                    }
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// The troubleshooting table of docs/troubleshooting.md, rendered from the catalog.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| `code` | status | from | what you see | cause | fix |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    let blank = Vars::new();
    for entry in CATALOG {
        // `<name>` placeholders would read as HTML tags in rendered Markdown.
        let cell = |text: &str| {
            text.replace('|', "\\|")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        let fix: Vec<String> = entry
            .fix
            .iter()
            .map(|step| cell(&blank.render(step)))
            .collect();
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} |",
            entry.code,
            entry.status,
            entry.origin.as_str(),
            cell(entry.sees),
            cell(&blank.render(entry.cause)),
            fix.join("<br>")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Codes are unique and every placeholder is a known variable name.
    #[test]
    fn catalog_is_consistent() {
        let known = [
            "object_id",
            "endpoint_host",
            "lacks",
            "recent",
            "resource",
            "client_id",
            "token_tenant",
            "audience",
            "expected_audience",
            "expected_scope",
            "expires_at",
            "authority",
            "azure_message",
            "deployment",
            "api",
            "api_version",
            "status",
            "tenant_id",
            "scope",
            "entra_message",
            "detail",
            "max_body",
            "limit",
            "version_fix",
            "what",
            "wait_ms",
        ];
        let mut codes: Vec<&str> = CATALOG.iter().map(|e| e.code.as_str()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), CATALOG.len(), "duplicate codes");
        for entry in CATALOG {
            for template in std::iter::once(&entry.cause).chain(entry.fix.iter()) {
                let mut rest = *template;
                while let Some(open) = rest.find('{') {
                    let after = &rest[open + 1..];
                    let close = after.find('}').expect("closed placeholder");
                    assert!(
                        known.contains(&&after[..close]),
                        "{}: unknown placeholder {}",
                        entry.code,
                        &after[..close]
                    );
                    rest = &after[close + 1..];
                }
            }
        }
    }

    /// Every refusal code has exactly one catalog entry, and the catalog has no other.
    #[test]
    fn every_code_has_one_entry() {
        for code in RefusalCode::ALL {
            let entries = CATALOG.iter().filter(|e| e.code == code).count();
            assert_eq!(entries, 1, "{code}");
        }
        assert_eq!(CATALOG.len(), RefusalCode::ALL.len());
    }

    /// Known values are filled in; unknown ones show as <name>.
    #[test]
    fn templates_render() {
        let vars = Vars::new().set("client_id", "abc");
        assert_eq!(
            vars.render("app {client_id} in {tenant_id}"),
            "app abc in <tenant_id>"
        );
        assert_eq!(vars.render("json {\"a\": 1}"), "json {\"a\": 1}");
        assert_eq!(
            Vars::new()
                .set("detail", "Try again.")
                .render("{detail}. Next"),
            "Try again. Next"
        );
    }
}
