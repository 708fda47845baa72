//! `GET /v1/models`: the models the key may use.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::InferenceKey;
use super::record::Outcome;
use crate::billing::Usage;
use crate::server::{AppState, RequestContext};

pub async fn list_models(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    InferenceKey(key): InferenceKey,
) -> Json<Value> {
    let record = state
        .gateway
        .recorder
        .start(&key.key, &context.request_id, "/v1/models");

    let data: Vec<Value> = state
        .gateway
        .models_for(&key)
        .into_iter()
        .map(|route| {
            json!({
                "id": route.name,
                "object": "model",
                "created": 0,
                "owned_by": route.owned_by,
            })
        })
        .collect();

    record
        .finish(Outcome {
            status: StatusCode::OK,
            error_code: None,
            usage: Usage::default(),
            cost_usd: Decimal::ZERO,
        })
        .await;
    Json(json!({ "object": "list", "data": data }))
}
