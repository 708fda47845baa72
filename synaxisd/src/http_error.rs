//! The single place that maps errors of every layer to an HTTP status, an OpenAI-shaped error
//! body, and a log level. Messages are in English and Brazilian Portuguese. The request-context
//! middleware in [`server`](crate::server) picks one from `Accept-Language`, or else from the
//! locale of the key's user.

use axum::Json;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use synaxis_shared::RegionId;
use synaxis_shared::api::KeyScope;
use synaxis_shared::budgets::Budget;
use synaxis_shared::error::{ErrorBody, ErrorDetail};
use synaxis_shared::plans::Quota;

use crate::store::StoreError;
use crate::tenancy::TenancyError;
use crate::tenancy::plans::PlanLimit;

pub use synaxis_shared::Locale;

/// An error returned to an API client.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing API key")]
    MissingKey,
    #[error("invalid API key")]
    InvalidKey,
    #[error("missing or invalid operator token")]
    InvalidOperatorToken,
    #[error("a key of scope {scope} cannot be used here")]
    WrongKeyScope { scope: KeyScope },
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("invalid request: {message}")]
    InvalidRequest {
        param: Option<String>,
        message: String,
    },
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("model `{0}` not found")]
    ModelNotFound(String),
    #[error("model `{model}` not allowed by the {policy}'s model policy")]
    ModelNotAllowed { model: String, policy: &'static str },
    #[error("{entity} `{id}` not found")]
    NotFound { entity: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("route not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The upstream rejected the request as invalid; its status and message reach the client.
    #[error("upstream rejected the request with status {status}: {message}")]
    UpstreamRejected { status: StatusCode, message: String },
    #[error("upstream failed: {0}")]
    Upstream(String),
    #[error("upstream timed out")]
    UpstreamTimeout,
    #[error("{} limit of the {} reached", .0.limit_name, .0.scope)]
    RateLimited(Box<RateLimited>),
    #[error("the {} plan's limit of {} is reached", .0.plan_name, .0.field)]
    PlanLimit(Box<PlanLimit>),
    #[error("the {} budget has too little left for this request", .0.budget.scope)]
    BudgetExceeded(Box<BudgetExceeded>),
    #[error("the {} {} limit is reached and credits cannot pay for more", .0.scope, .0.limit_name)]
    InsufficientCredits(Box<InsufficientCredits>),
    #[error("this request belongs to region {region}")]
    WrongRegion {
        region: RegionId,
        signup_url: String,
        /// Whether the request named the region, rather than its country choosing it.
        named: bool,
    },
    #[error("the key's home region {region} cannot be reached")]
    RegionUnavailable { region: RegionId },
    /// A failover drill could not run, for the stated reason.
    #[error("the failover drill could not run: {0}")]
    DrillFailed(String),
    /// Another failover drill has claimed the regions until `until`, so the drill `refused` did
    /// not start.
    #[error("failover drill {drill_id}, run by {coordinator}, holds the regions until {until}")]
    DrillRunning {
        refused: String,
        drill_id: String,
        coordinator: RegionId,
        until: chrono::DateTime<chrono::Utc>,
    },
    /// The home region is down, and the user has no basis for being served in `here`.
    #[error("the key's home region {region} cannot be reached, and no consent allows {here}")]
    RegionUnavailableWithoutConsent { region: RegionId, here: RegionId },
    /// A key of another region reached a region that has no peer links to forward it.
    #[error("the key belongs to region {region}")]
    OtherRegionKey { region: RegionId, url: String },
    #[error("peer call refused: {0}")]
    PeerRefused(crate::region::peer::PeerAuthError),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingKey | Self::InvalidKey | Self::InvalidOperatorToken => {
                StatusCode::UNAUTHORIZED
            }
            Self::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ModelNotFound(_) | Self::NotFound { .. } | Self::RouteNotFound => {
                StatusCode::NOT_FOUND
            }
            Self::ModelNotAllowed { .. }
            | Self::WrongKeyScope { .. }
            | Self::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Self::Conflict(_) | Self::PlanLimit(_) => StatusCode::CONFLICT,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::BudgetExceeded(_) | Self::InsufficientCredits(_) => StatusCode::PAYMENT_REQUIRED,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::WrongRegion { .. } | Self::OtherRegionKey { .. } => {
                StatusCode::MISDIRECTED_REQUEST
            }
            Self::RegionUnavailable { .. } | Self::RegionUnavailableWithoutConsent { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::PeerRefused(_) => StatusCode::UNAUTHORIZED,
            Self::DrillFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::DrillRunning { .. } => StatusCode::CONFLICT,
            Self::UpstreamRejected { status, .. } => *status,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Returns the stable machine-readable code for the body's `code` field.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingKey => "missing_api_key",
            Self::InvalidKey => "invalid_api_key",
            Self::InvalidOperatorToken => "invalid_operator_token",
            Self::WrongKeyScope { .. } => "wrong_key_scope",
            Self::PermissionDenied(_) => "permission_denied",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::BodyTooLarge { .. } => "request_too_large",
            Self::ModelNotFound(_) => "model_not_found",
            Self::ModelNotAllowed { .. } => "model_not_allowed",
            Self::NotFound { .. } => "not_found",
            Self::Conflict(_) => "conflict",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UpstreamRejected { .. } => "upstream_rejected",
            Self::RateLimited(limited) => limited.kind.code(),
            Self::PlanLimit(_) => "plan_limit_reached",
            Self::BudgetExceeded(_) => "budget_exceeded",
            Self::InsufficientCredits(_) => "insufficient_credits",
            Self::WrongRegion { .. } | Self::OtherRegionKey { .. } => "wrong_region",
            Self::RegionUnavailable { .. } | Self::RegionUnavailableWithoutConsent { .. } => {
                "region_unavailable"
            }
            Self::PeerRefused(_) => "peer_unauthorized",
            Self::DrillFailed(_) => "drill_failed",
            Self::DrillRunning { .. } => "drill_running",
            Self::Upstream(_) => "upstream_error",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::ShuttingDown => "shutting_down",
            Self::Internal => "internal_error",
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::MissingKey
            | Self::InvalidKey
            | Self::InvalidOperatorToken
            | Self::PeerRefused(_) => "authentication_error",
            Self::ModelNotAllowed { .. }
            | Self::WrongKeyScope { .. }
            | Self::PermissionDenied(_) => "permission_error",
            Self::InvalidRequest { .. }
            | Self::BodyTooLarge { .. }
            | Self::ModelNotFound(_)
            | Self::NotFound { .. }
            | Self::Conflict(_)
            | Self::PlanLimit(_)
            | Self::RouteNotFound
            | Self::MethodNotAllowed
            | Self::WrongRegion { .. }
            | Self::OtherRegionKey { .. }
            | Self::UpstreamRejected { .. } => "invalid_request_error",
            Self::RateLimited(_) => "rate_limit_error",
            Self::BudgetExceeded(_) | Self::InsufficientCredits(_) => "insufficient_quota",
            Self::Upstream(_)
            | Self::UpstreamTimeout
            | Self::RegionUnavailable { .. }
            | Self::RegionUnavailableWithoutConsent { .. }
            | Self::DrillFailed(_)
            | Self::DrillRunning { .. }
            | Self::ShuttingDown
            | Self::Internal => "api_error",
        }
    }

    fn param(&self) -> Option<String> {
        match self {
            Self::InvalidRequest { param, .. } => param.clone(),
            Self::ModelNotFound(_) | Self::ModelNotAllowed { .. } => Some("model".to_owned()),
            _ => None,
        }
    }

    /// Returns the message shown to the client in `locale`. Messages that carry a detail from another
    /// layer (validation, conflicts, upstream) keep that detail in English.
    pub fn message(&self, locale: Locale) -> String {
        match locale {
            Locale::En => self.message_en(),
            Locale::PtBr => self.message_pt_br(),
        }
    }

    fn message_en(&self) -> String {
        match self {
            Self::MissingKey => {
                "Missing API key: send it as `Authorization: Bearer sk-syn-...`.".to_owned()
            }
            Self::InvalidKey => {
                "Invalid API key: the key is unknown, revoked or expired. Create a new key with `synaxisctl key create`.".to_owned()
            }
            Self::InvalidOperatorToken => {
                "Missing or invalid credentials: send the operator token or a management key as `Authorization: Bearer TOKEN`.".to_owned()
            }
            Self::WrongKeyScope { scope } => format!(
                "This key has the scope `{scope}` and cannot be used here. Use an inference key for /v1 and a management key for /control/v1."
            ),
            Self::PermissionDenied(reason) => format!("Permission denied: {reason}."),
            Self::InvalidRequest { message, .. } => message.clone(),
            Self::BodyTooLarge { limit } => {
                format!("The request body is larger than the limit of {limit} bytes. Send a smaller request.")
            }
            Self::ModelNotFound(model) => {
                format!("The model `{model}` does not exist. List the available models with GET /v1/models.")
            }
            Self::ModelNotAllowed { model, policy } => format!(
                "The model `{model}` is not allowed by the {policy}'s model policy. Ask an organization admin to allow it there."
            ),
            Self::NotFound { entity, id } => format!("The {entity} `{id}` was not found."),
            Self::Conflict(message) => message.clone(),
            Self::RouteNotFound => "No such route.".to_owned(),
            Self::MethodNotAllowed => {
                "This route does not accept this HTTP method; see docs/api.md for its methods.".to_owned()
            }
            Self::UpstreamRejected { message, .. } => message.clone(),
            Self::RateLimited(limited) => limited.message_en(),
            Self::PlanLimit(limit) => plan_limit_message(limit, Locale::En),
            Self::BudgetExceeded(exceeded) => exceeded.message(Locale::En),
            Self::InsufficientCredits(refused) => refused.message(Locale::En),
            Self::WrongRegion {
                region,
                signup_url,
                named,
            } => {
                let origin = if *named {
                    "The region you asked for"
                } else {
                    "The region of signups from your location"
                };
                format!("{origin}, {region}, is not served here. Send the signup to {signup_url}.")
            }
            Self::Upstream(detail) => format!(
                "The upstream provider failed: {detail}. Try again later; if it persists, the operator should check the upstream's base_url and API key."
            ),
            Self::UpstreamTimeout => "The upstream provider timed out. Try again later.".to_owned(),
            Self::RegionUnavailable { region } => format!(
                "Region {region}, where this request is served, is unavailable from here right now. Retry after the time in Retry-After."
            ),
            Self::RegionUnavailableWithoutConsent { region, here } => format!(
                "Your home region, {region}, is unavailable right now, and neither your consent nor your organization's contractual clauses allow processing your data in {here}. Retry after the time in Retry-After, or, while your region is up, consent to cross-border failover: POST /v1/privacy/consent with {{\"scope\": \"cross_border_failover\"}}, whose `regions`, when given, must include {here}."
            ),
            Self::DrillFailed(reason) => format!(
                "The failover drill could not run: {reason}. Check every region with `synaxisctl region status`, then run the drill again."
            ),
            Self::DrillRunning {
                refused,
                drill_id,
                coordinator,
                until,
            } => format!(
                "Failover drill {drill_id}, run by {coordinator}, holds the regions until {} at the latest, so drill {refused} did not start. Run it again after that drill ends.",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Self::OtherRegionKey { region, url } => format!(
                "This key belongs to region {region}, and this region does not forward to it. Send the request to {url}."
            ),
            Self::PeerRefused(reason) => format!("Peer call refused: {reason}."),
            Self::ShuttingDown => {
                "The server is shutting down and ended this request. Retry it.".to_owned()
            }
            Self::Internal => "Internal error. Try again later.".to_owned(),
        }
    }

    fn message_pt_br(&self) -> String {
        match self {
            Self::MissingKey => {
                "Chave de API ausente: envie-a como `Authorization: Bearer sk-syn-...`.".to_owned()
            }
            Self::InvalidKey => {
                "Chave de API inválida: a chave é desconhecida, revogada ou expirada. Crie uma nova chave com `synaxisctl key create`.".to_owned()
            }
            Self::InvalidOperatorToken => {
                "Credenciais ausentes ou inválidas: envie o token de operador ou uma chave de gestão como `Authorization: Bearer TOKEN`.".to_owned()
            }
            Self::WrongKeyScope { scope } => format!(
                "Esta chave tem o escopo `{scope}` e não pode ser usada aqui. Use uma chave de inferência em /v1 e uma chave de gestão em /control/v1."
            ),
            Self::PermissionDenied(reason) => format!("Permissão negada: {reason}."),
            Self::InvalidRequest { message, .. } => format!("Requisição inválida: {message}"),
            Self::BodyTooLarge { limit } => {
                format!("O corpo da requisição passa do limite de {limit} bytes. Envie uma requisição menor.")
            }
            Self::ModelNotFound(model) => {
                format!("O modelo `{model}` não existe. Liste os modelos disponíveis com GET /v1/models.")
            }
            Self::ModelNotAllowed { model, policy } => format!(
                "O modelo `{model}` não é permitido pela política de modelos da {}. Peça a um administrador da organização que o permita ali.",
                policy_pt_br(policy)
            ),
            Self::NotFound { entity, id } => {
                format!("Não encontrado: {} `{id}`.", entity_pt_br(entity))
            }
            Self::Conflict(message) => format!("Conflito: {message}"),
            Self::RouteNotFound => "Rota inexistente.".to_owned(),
            Self::MethodNotAllowed => {
                "Esta rota não aceita este método HTTP; veja os métodos dela em docs/api.md.".to_owned()
            }
            Self::UpstreamRejected { message, .. } => message.clone(),
            Self::RateLimited(limited) => limited.message_pt_br(),
            Self::PlanLimit(limit) => plan_limit_message(limit, Locale::PtBr),
            Self::BudgetExceeded(exceeded) => exceeded.message(Locale::PtBr),
            Self::InsufficientCredits(refused) => refused.message(Locale::PtBr),
            Self::WrongRegion {
                region,
                signup_url,
                named,
            } => {
                let origin = if *named {
                    "A região pedida"
                } else {
                    "A região dos cadastros da sua localização"
                };
                format!(
                    "{origin}, {region}, não é atendida aqui. Envie o cadastro para {signup_url}."
                )
            }
            Self::Upstream(detail) => format!(
                "O provedor upstream falhou: {detail}. Tente novamente mais tarde; se persistir, o operador deve verificar o base_url e a chave de API do upstream."
            ),
            Self::UpstreamTimeout => {
                "O provedor upstream excedeu o tempo limite. Tente novamente mais tarde.".to_owned()
            }
            Self::RegionUnavailable { region } => format!(
                "A região {region}, onde esta requisição é atendida, está indisponível daqui agora. Tente de novo após o tempo em Retry-After."
            ),
            Self::RegionUnavailableWithoutConsent { region, here } => format!(
                "Sua região de origem, {region}, está indisponível agora, e nem o seu consentimento nem as cláusulas contratuais da sua organização permitem tratar seus dados em {here}. Tente de novo após o tempo em Retry-After ou, enquanto a sua região estiver no ar, dê o consentimento para failover entre regiões: POST /v1/privacy/consent com {{\"scope\": \"cross_border_failover\"}}, cuja lista `regions`, quando informada, deve incluir {here}."
            ),
            Self::DrillFailed(reason) => format!(
                "O exercício de failover não pôde ser feito: {reason}. Verifique todas as regiões com `synaxisctl region status` e repita o exercício."
            ),
            Self::DrillRunning {
                refused,
                drill_id,
                coordinator,
                until,
            } => format!(
                "O exercício de failover {drill_id}, conduzido por {coordinator}, ocupa as regiões até {} no máximo, então o exercício {refused} não começou. Repita-o depois que aquele exercício terminar.",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            Self::OtherRegionKey { region, url } => format!(
                "Esta chave pertence à região {region}, e esta região não encaminha para ela. Envie a requisição para {url}."
            ),
            Self::PeerRefused(reason) => {
                format!("Chamada entre regiões recusada: {}.", reason.message_pt_br())
            }
            Self::ShuttingDown => {
                "O servidor está sendo desligado e encerrou esta requisição. Repita-a.".to_owned()
            }
            Self::Internal => "Erro interno. Tente novamente mais tarde.".to_owned(),
        }
    }

    pub fn body(&self, locale: Locale) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                message: self.message(locale),
                kind: self.kind().to_owned(),
                code: Some(self.code().to_owned()),
                param: self.param(),
            },
        }
    }

    fn log(&self) {
        match self {
            Self::Internal
            | Self::Upstream(_)
            | Self::UpstreamTimeout
            | Self::RegionUnavailable { .. }
            | Self::DrillFailed(_)
            | Self::PeerRefused(_)
            | Self::ShuttingDown => {
                tracing::warn!(error = %self, code = self.code(), "request failed");
            }
            _ => tracing::debug!(error = %self, code = self.code(), "request rejected"),
        }
    }
}

/// Names a model policy's owner in Brazilian Portuguese.
fn policy_pt_br(policy: &str) -> &str {
    match policy {
        "key" => "chave",
        "team" => "equipe",
        "organization" => "organização",
        other => other,
    }
}

/// Names the owner of a rate limit in Brazilian Portuguese, with its preposition.
fn scope_pt_br(scope: &str) -> &str {
    match scope {
        "key" => "da chave",
        "user" => "do usuário",
        "team" => "da equipe",
        "organization" => "da organização",
        "plan" => "do plano",
        other => other,
    }
}

/// Names a stored entity in Brazilian Portuguese.
fn entity_pt_br(entity: &str) -> &str {
    match entity {
        "organization" => "organização",
        "team" => "equipe",
        "user" => "usuário",
        "key" => "chave",
        "resource" => "recurso",
        other => other,
    }
}

/// The reason for a 429 response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitKind {
    /// A `throttle` limit had no room within the wait.
    Throttled,
    /// A `block` limit had no room, and has none until its window resets.
    Blocked,
    /// The organization's cap on concurrent requests was reached for the whole wait.
    Concurrency,
}

impl RateLimitKind {
    pub fn code(self) -> &'static str {
        match self {
            Self::Throttled => "rate_limit_exceeded",
            Self::Blocked => "quota_exceeded",
            Self::Concurrency => "concurrency_limit_exceeded",
        }
    }
}

/// The limit that refused a request, and when to retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimited {
    pub kind: RateLimitKind,
    /// `key`, `user`, `team` or `organization`.
    pub scope: &'static str,
    /// The limit, such as `requests per minute`.
    pub limit_name: String,
    pub limit: u64,
    /// Time until the limit has room, `None` when the request alone is larger than the limit.
    pub retry_after: Option<Duration>,
    /// The `x-ratelimit-*` headers of the refusing limit.
    pub headers: HeaderMap,
}

impl RateLimited {
    fn message_en(&self) -> String {
        let Self {
            scope,
            limit_name,
            limit,
            ..
        } = self;
        let one = *limit == 1;
        let head = match self.kind {
            RateLimitKind::Concurrency => {
                let requests = if one { "request" } else { "requests" };
                format!("The organization's limit of {limit} concurrent {requests} is reached.")
            }
            _ => {
                let name = if one {
                    limit_name.replacen("s per ", " per ", 1)
                } else {
                    limit_name.clone()
                };
                format!("The {scope}'s limit of {limit} {name} is reached.")
            }
        };
        match self.retry_after {
            Some(wait) => format!("{head} Retry after {} s.", whole_seconds(wait)),
            None => format!(
                "{head} This request alone is larger than the limit: it is charged its input plus `max_tokens`, or plus the server's output estimate (`limits.output_tokens_estimate`) when `max_tokens` is not set. Send a smaller `max_tokens` or a shorter input."
            ),
        }
    }

    fn message_pt_br(&self) -> String {
        let Self { limit, .. } = self;
        let head = match self.kind {
            RateLimitKind::Concurrency => {
                let requests = if *limit == 1 {
                    "requisição simultânea"
                } else {
                    "requisições simultâneas"
                };
                format!("O limite de {limit} {requests} da organização foi atingido.")
            }
            _ => format!(
                "O limite de {limit} {} {} foi atingido.",
                limit_name_pt_br(&self.limit_name, *limit == 1),
                scope_pt_br(self.scope)
            ),
        };
        match self.retry_after {
            Some(wait) => format!("{head} Tente de novo em {} s.", whole_seconds(wait)),
            None => format!(
                "{head} Esta requisição sozinha passa do limite: ela é cobrada pela entrada mais `max_tokens`, ou mais a estimativa de saída do servidor (`limits.output_tokens_estimate`) quando `max_tokens` não é definido. Envie um `max_tokens` menor ou uma entrada mais curta."
            ),
        }
    }
}

/// Rounds a wait up to whole seconds, as `Retry-After` carries it.
pub fn whole_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// Names a limit such as `requests per minute` in Brazilian Portuguese, in the singular for a
/// limit of one.
fn limit_name_pt_br(name: &str, one: bool) -> String {
    let (metric, window) = name.split_once(" per ").unwrap_or((name, ""));
    let metric = match (metric, one) {
        ("requests", false) => "requisições",
        ("requests", true) => "requisição",
        ("tokens", false) => "tokens",
        ("tokens", true) => "token",
        (other, _) => other,
    };
    let window = match window {
        "minute" => "minuto",
        "hour" => "hora",
        "day" => "dia",
        "month" => "mês",
        other => other,
    };
    format!("{metric} por {window}")
}

/// `Retry-After` of a request whose home region cannot be reached: about the time in which the
/// health probes notice a region that came back.
pub const REGION_RETRY_AFTER_SECS: u64 = 5;

impl IntoResponse for ApiError {
    /// Renders the English body and keeps the error in the response's extensions, so that the
    /// localizing middleware can render it again in the client's language. A 429 carries
    /// `Retry-After` in whole seconds and `retry-after-ms`, which the OpenAI SDKs read.
    fn into_response(self) -> Response {
        self.log();
        let mut response = (self.status(), Json(self.body(Locale::En))).into_response();
        if let Self::RateLimited(limited) = &self {
            response.headers_mut().extend(limited.headers.clone());
        }
        if let Self::RegionUnavailable { .. } | Self::RegionUnavailableWithoutConsent { .. } = &self
        {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(REGION_RETRY_AFTER_SECS),
            );
        }
        if let Self::RateLimited(limited) = &self
            && let Some(wait) = limited.retry_after
        {
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(wait)));
            let millis = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            headers.insert(RETRY_AFTER_MS.clone(), HeaderValue::from(millis));
        }
        response.extensions_mut().insert(self);
        response
    }
}

/// Returns the message of a reached plan limit: the limit, the plan that sets it, and the plan
/// that lifts it.
fn plan_limit_message(limit: &PlanLimit, locale: Locale) -> String {
    let plan = &limit.plan_name;
    let Some(count) = limit.limit else {
        if limit.field == "billing_currencies" {
            let currency = limit.value.as_deref().unwrap_or("this currency");
            return match (locale, &limit.lifted_by) {
                (Locale::En, Some((lifter, _))) => format!(
                    "The {plan} plan does not bill in {currency}. Choose one of its billing currencies (`synaxisctl org show`), or move the organization to the {lifter} plan, which does."
                ),
                (Locale::En, None) => format!(
                    "The {plan} plan does not bill in {currency}. Choose one of the plan's billing currencies (`synaxisctl org show`)."
                ),
                (Locale::PtBr, Some((lifter, _))) => format!(
                    "O plano {plan} não fatura em {currency}. Escolha uma das moedas de faturamento dele (`synaxisctl org show`), ou mude a organização para o plano {lifter}, que fatura nela."
                ),
                (Locale::PtBr, None) => format!(
                    "O plano {plan} não fatura em {currency}. Escolha uma das moedas de faturamento do plano (`synaxisctl org show`)."
                ),
            };
        }
        if limit.field == "auto_topup" {
            return match (locale, &limit.lifted_by) {
                (Locale::En, Some((lifter, _))) => format!(
                    "The {plan} plan has no auto top-up of credits. Top up with `synaxisctl credits topup`, or move the organization to the {lifter} plan, which has it."
                ),
                (Locale::En, None) => format!(
                    "The {plan} plan has no auto top-up of credits. Top up with `synaxisctl credits topup`."
                ),
                (Locale::PtBr, Some((lifter, _))) => format!(
                    "O plano {plan} não tem recarga automática de créditos. Adicione créditos com `synaxisctl credits topup`, ou mude a organização para o plano {lifter}, que a tem."
                ),
                (Locale::PtBr, None) => format!(
                    "O plano {plan} não tem recarga automática de créditos. Adicione créditos com `synaxisctl credits topup`."
                ),
            };
        }
        // The other field that is not a count: a plan without sliding windows.
        return match (locale, &limit.lifted_by) {
            (Locale::En, Some((lifter, _))) => format!(
                "The {plan} plan allows only fixed rate-limit windows, and this limit set uses a sliding one. Use fixed windows, or move the organization to the {lifter} plan, which allows sliding windows."
            ),
            (Locale::En, None) => format!(
                "The {plan} plan allows only fixed rate-limit windows, and this limit set uses a sliding one. Use fixed windows."
            ),
            (Locale::PtBr, Some((lifter, _))) => format!(
                "O plano {plan} permite apenas janelas fixas de limite de taxa, e este conjunto de limites usa uma janela deslizante. Use janelas fixas, ou mude a organização para o plano {lifter}, que permite janelas deslizantes."
            ),
            (Locale::PtBr, None) => format!(
                "O plano {plan} permite apenas janelas fixas de limite de taxa, e este conjunto de limites usa uma janela deslizante. Use janelas fixas."
            ),
        };
    };
    let (en_one, en_many, pt_one, pt_many) = match limit.field {
        "teams" => (
            "team per organization",
            "teams per organization",
            "equipe por organização",
            "equipes por organização",
        ),
        "users_per_team" => (
            "active user per team",
            "active users per team",
            "usuário ativo por equipe",
            "usuários ativos por equipe",
        ),
        _ => (
            "active key per user",
            "active keys per user",
            "chave ativa por usuário",
            "chaves ativas por usuário",
        ),
    };
    match locale {
        Locale::En => {
            let unit = if count == 1 { en_one } else { en_many };
            let lift = match &limit.lifted_by {
                Some((lifter, Quota::Unlimited)) => format!(
                    "Move the organization to the {lifter} plan, which has no such limit (`synaxisctl plan migrate`)."
                ),
                Some((lifter, Quota::Limited(more))) => format!(
                    "Move the organization to the {lifter} plan, which allows {more} (`synaxisctl plan migrate`)."
                ),
                None => "No plan allows more: ask the operator for an override.".to_owned(),
            };
            format!("The {plan} plan allows {count} {unit}, and that limit is reached. {lift}")
        }
        Locale::PtBr => {
            let unit = if count == 1 { pt_one } else { pt_many };
            let lift = match &limit.lifted_by {
                Some((lifter, Quota::Unlimited)) => format!(
                    "Mude a organização para o plano {lifter}, que não tem esse limite (`synaxisctl plan migrate`)."
                ),
                Some((lifter, Quota::Limited(more))) => format!(
                    "Mude a organização para o plano {lifter}, que permite {more} (`synaxisctl plan migrate`)."
                ),
                None => {
                    "Nenhum plano permite mais: peça ao operador uma exceção (override).".to_owned()
                }
            };
            format!("O plano {plan} permite {count} {unit}, e esse limite foi atingido. {lift}")
        }
    }
}

/// A request refused because a budget has less left than the request's worst-case cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetExceeded {
    pub budget: Budget,
    /// The request's worst-case cost, which admission tried to reserve.
    pub cost_usd: Decimal,
}

impl BudgetExceeded {
    fn message(&self, locale: Locale) -> String {
        let budget = &self.budget;
        let (scope, id) = (budget.scope, budget.id);
        let amount = |value: Decimal| usd(value, locale);
        let (max, left, spent, reserved, cost) = (
            amount(budget.max_usd),
            amount(budget.remaining_usd),
            amount(budget.spent_usd),
            amount(budget.reserved_usd),
            amount(self.cost_usd),
        );
        // With nothing left, a smaller request cannot help.
        let exhausted = budget.remaining_usd.is_zero();
        match locale {
            Locale::En if exhausted => format!(
                "The {scope} budget of ${max} is used up (${spent} spent, ${reserved} reserved by requests in flight). Raise it with `synaxisctl budget set --{scope} {id} --max-usd USD --justification TEXT`."
            ),
            Locale::PtBr if exhausted => format!(
                "O orçamento {} de US$ {max} está esgotado (US$ {spent} gastos, US$ {reserved} reservados por requisições em andamento). Aumente-o com `synaxisctl budget set --{scope} {id} --max-usd USD --justification TEXT`.",
                scope.pt_br()
            ),
            Locale::En => {
                let smaller = ", or send a lower max_tokens";
                format!(
                    "The {scope} budget of ${max} has ${left} left (${spent} spent, ${reserved} reserved by requests in flight), less than this request's worst-case cost of ${cost}. Raise it with `synaxisctl budget set --{scope} {id} --max-usd USD --justification TEXT`{smaller}."
                )
            }
            Locale::PtBr => {
                let smaller = ", ou envie um max_tokens menor";
                format!(
                    "O orçamento {} de US$ {max} tem US$ {left} livres (US$ {spent} gastos, US$ {reserved} reservados por requisições em andamento), menos que o custo máximo desta requisição, US$ {cost}. Aumente-o com `synaxisctl budget set --{scope} {id} --max-usd USD --justification TEXT`{smaller}.",
                    scope.pt_br()
                )
            }
        }
    }
}

/// A request past a `credit_charge` limit, refused because its overage charge would take the
/// org's credit balance under the minimum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsufficientCredits {
    /// Such as `tokens per month`.
    pub limit_name: String,
    /// The limit's owner: `plan`, `organization`, `team`, `user` or `key`.
    pub scope: &'static str,
    pub balance_usd: Decimal,
    /// The overage charge of the whole request at most.
    pub charge_usd: Decimal,
    pub minimum_balance_usd: Decimal,
}

impl InsufficientCredits {
    fn message(&self, locale: Locale) -> String {
        let (balance, charge, minimum) = (
            usd(self.balance_usd, locale),
            usd(self.charge_usd, locale),
            usd(self.minimum_balance_usd, locale),
        );
        let scope = self.scope;
        match locale {
            Locale::En => format!(
                "The {scope} limit of {} is reached, and the organization's credits cannot pay for more: the balance of ${balance}, less this request's overage of up to ${charge}, would fall under the minimum balance of ${minimum}. Top up credits (`synaxisctl credits topup`) or raise the limit.",
                self.limit_name
            ),
            Locale::PtBr => format!(
                "O limite de {} {} foi atingido, e os créditos da organização não pagam mais: o saldo de US$ {balance}, menos o excedente desta requisição, de até US$ {charge}, ficaria abaixo do saldo mínimo de US$ {minimum}. Adicione créditos (`synaxisctl credits topup`) ou aumente o limite.",
                limit_name_pt_br(&self.limit_name, false),
                scope_pt_br(scope)
            ),
        }
    }
}

/// Formats a USD amount without trailing zeros past the cents: `10.00`, `0.000125`, with a
/// decimal comma in Brazilian Portuguese (`10,00`).
fn usd(amount: Decimal, locale: Locale) -> String {
    let amount = amount.normalize();
    let text = if amount.scale() < 2 {
        format!("{amount:.2}")
    } else {
        amount.to_string()
    };
    match locale {
        Locale::En => text,
        Locale::PtBr => text.replace('.', ","),
    }
}

static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { entity, id } => Self::NotFound { entity, id },
            StoreError::Conflict(message) => Self::Conflict(message),
            other => {
                tracing::error!(error = %other, "store failed");
                Self::Internal
            }
        }
    }
}

impl From<TenancyError> for ApiError {
    fn from(error: TenancyError) -> Self {
        match error {
            TenancyError::Invalid { field, message } => Self::invalid(field, message),
            TenancyError::Denied(reason) => Self::PermissionDenied(reason),
            TenancyError::Store(error) => error.into(),
            TenancyError::PlanLimit(limit) => Self::PlanLimit(limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(kind: RateLimitKind, limit: u64, retry_after: Option<Duration>) -> ApiError {
        ApiError::RateLimited(Box::new(RateLimited {
            kind,
            scope: "organization",
            limit_name: "requests per minute".to_owned(),
            limit,
            retry_after,
            headers: HeaderMap::new(),
        }))
    }

    #[test]
    fn rate_limit_messages_agree_in_number() {
        let wait = Some(Duration::from_millis(1_500));
        let one = limited(RateLimitKind::Blocked, 1, wait);
        assert_eq!(
            one.message(Locale::En),
            "The organization's limit of 1 request per minute is reached. Retry after 2 s."
        );
        assert_eq!(
            one.message(Locale::PtBr),
            "O limite de 1 requisição por minuto da organização foi atingido. Tente de novo em 2 s."
        );
        let many = limited(RateLimitKind::Throttled, 5, wait);
        assert!(many.message(Locale::En).contains("5 requests per minute"));
        assert!(
            many.message(Locale::PtBr)
                .contains("5 requisições por minuto")
        );
        let cap = limited(RateLimitKind::Concurrency, 1, wait);
        assert!(cap.message(Locale::En).contains("1 concurrent request is"));
        assert!(
            cap.message(Locale::PtBr)
                .contains("1 requisição simultânea")
        );
    }

    #[test]
    fn oversized_request_message_names_the_estimate() {
        let error = limited(RateLimitKind::Blocked, 500, None);
        let message = error.message(Locale::En);
        assert!(
            message.contains("limits.output_tokens_estimate"),
            "{message}"
        );
        assert!(!message.contains("Retry after"), "{message}");
    }
}
