//! Exchange rate and invoice routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use synaxis_shared::InvoiceId;
use synaxis_shared::api::List;
use synaxis_shared::invoices::{FxRate, Invoice, IssueInvoiceRequest, SetFxRatesRequest};
use synaxis_shared::money::Currency;

use super::ControlCaller;
use super::extract::{JsonBody, QueryParams, parse_id};
use crate::http_error::ApiError;
use crate::server::AppState;

/// Query of `GET /control/v1/fx`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FxQuery {
    currency: Option<Currency>,
}

pub async fn list_fx(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    QueryParams(query): QueryParams<FxQuery>,
) -> Result<Json<List<FxRate>>, ApiError> {
    let rates = state.tenancy.list_fx_rates(&caller, query.currency).await?;
    Ok(Json(List { data: rates }))
}

/// Stores exchange rates, all or none.
pub async fn set_fx(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    JsonBody(request): JsonBody<SetFxRatesRequest>,
) -> Result<(StatusCode, Json<List<FxRate>>), ApiError> {
    let rates = state.tenancy.set_fx_rates(&caller, request).await?;

    tracing::info!(rates = rates.len(), "exchange rates set");
    Ok((StatusCode::CREATED, Json(List { data: rates })))
}

/// Issues an organization's invoice of one month.
pub async fn issue_invoice(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
    JsonBody(request): JsonBody<IssueInvoiceRequest>,
) -> Result<(StatusCode, Json<Invoice>), ApiError> {
    let invoice = state.tenancy.issue_invoice(&caller, &org, request).await?;

    tracing::info!(org = %org, invoice.id = %invoice.id, period = %invoice.period, "invoice issued");
    Ok((StatusCode::CREATED, Json(invoice)))
}

pub async fn list_invoices(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(org): Path<String>,
) -> Result<Json<List<Invoice>>, ApiError> {
    let invoices = state.tenancy.list_invoices(&caller, &org).await?;
    Ok(Json(List { data: invoices }))
}

pub async fn show_invoice(
    State(state): State<AppState>,
    ControlCaller(caller): ControlCaller,
    Path(invoice): Path<String>,
) -> Result<Json<Invoice>, ApiError> {
    let id: InvoiceId = parse_id("invoice", &invoice)?;
    Ok(Json(state.tenancy.get_invoice(&caller, id).await?))
}
