//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::Problem;
use crate::routes::{audit, gateway, keys, openai, ops, orgs, usage};
use crate::views::{KeyList, MaskedKey, OrgStatus, ProviderOrder, VerificationView};

/// keyledger's HTTP API.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "keyledger", description = "Bring-your-own-key storage for AI provider keys: write-only, event-sourced, audited."),
    paths(
        orgs::org_status, orgs::set_plan, orgs::set_byok_access, orgs::get_provider_order,
        orgs::set_provider_order, keys::store_key, keys::list_keys, keys::get_key,
        keys::rotate_key, keys::update_key, keys::remove_key, keys::verify_key,
        audit::audit_page, audit::audit_verify, audit::events, usage::usage, usage::recent_calls, usage::record_usage,
        gateway::forward, openai::chat_completions, openai::embeddings, openai::models, ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(
        Problem, MaskedKey, VerificationView, OrgStatus, KeyList, ProviderOrder,
        keys::StoreKeyRequest, keys::RotateKeyRequest, keys::UpdateKeyRequest,
        orgs::PlanRequest, orgs::ByokAccessRequest, orgs::ProviderOrderRequest,
        audit::AuditPage, audit::AuditVerification, usage::UsageReport, usage::CallList, usage::CallView, usage::RecordUsageRequest, usage::UsageRecorded,
        openai::ModelList, openai::ModelView,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

#[derive(Debug)]
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build(),
            ),
        );
    }
}
