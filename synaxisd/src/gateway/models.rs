//! `GET /v1/models`: the models the key may use.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::InferenceKey;
use super::record::Outcome;
use crate::billing::Usage;
use crate::region::failover::FailedOver;
use crate::server::{AppState, RequestContext};

pub async fn list_models(
    State(state): State<AppState>,
    Extension(context): Extension<RequestContext>,
    failover: Option<Extension<FailedOver>>,
    InferenceKey(key): InferenceKey,
) -> Json<Value> {
    let mut record = state
        .gateway
        .recorder
        .start(&key.key, &context.request_id, "/v1/models");
    // The record of a user of another region served during failover belongs to that region.
    if let Some(Extension(failover)) = failover {
        record.hold_for(failover.home);
    }

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
