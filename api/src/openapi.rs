//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::error::Problem;
use crate::routes::{audit, catalogue, keys, openai, orgs, usage};
use crate::views::{KeyList, MaskedKey, OrgStatus, ProviderOrder, VerificationView};

/// The `{org}` path parameter, as the API takes it.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the OpenAPI document only.
pub(crate) struct OrgPath {
    /// The organization's id.
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", example = "acme")]
    org: String,
}

/// The `{org}` and `{provider}` path parameters.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the OpenAPI document only.
pub(crate) struct KeyPath {
    /// The organization's id.
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", example = "acme")]
    org: String,
    /// A registry provider.
    provider: ProviderName,
}

/// The registry's provider ids, as the OpenAPI document lists them: taken from the registry
/// itself, so a provider added there is in the document too.
#[derive(Debug)]
pub(crate) struct ProviderName;

impl utoipa::PartialSchema for ProviderName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let ids = keyledger_domain::ProviderId::ALL.iter().map(|p| p.as_str());
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ids))
            .into()
    }
}

impl ToSchema for ProviderName {}

/// The actions an audit entry can record, from the trail's own list.
#[derive(Debug)]
pub(crate) struct AuditAction;

impl utoipa::PartialSchema for AuditAction {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(keyledger_projections::audit::ACTIONS.iter().copied()))
            .into()
    }
}

impl ToSchema for AuditAction {}

/// keyledger's HTTP API: what the document says besides its operations, which come from the
/// route list (`router.rs`).
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "keyledger", description = "Bring-your-own-key storage for AI provider keys: write-only, event-sourced, audited."),
    components(schemas(
        Problem, ProviderName, AuditAction, MaskedKey, VerificationView, OrgStatus, KeyList, ProviderOrder,
        keys::StoreKeyRequest, keys::RotateKeyRequest, keys::UpdateKeyRequest,
        orgs::PlanRequest, orgs::ByokAccessRequest, orgs::ProviderOrderRequest,
        audit::AuditPage, audit::AuditVerification, usage::UsageReport, usage::CallList, usage::CallView, usage::RecordUsageRequest, usage::UsageRecorded, usage::RecordUsageBatch, usage::BatchRecorded, usage::BatchEntry,
        openai::ModelList, openai::ModelView,
        orgs::OrgList, orgs::OrgSummary, catalogue::WhoAmI, catalogue::ProviderList, catalogue::ProviderView, catalogue::PlanList, catalogue::PlanView,
    )),
    modifiers(&BearerAuth),
)]
pub(crate) struct ApiDoc;

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
