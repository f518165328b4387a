//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::error::Problem;
use crate::routes::{audit, keys, openai, orgs, usage};
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

/// keyledger's HTTP API: what the document says besides its operations, which come from the
/// route list (`crate::router`).
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "keyledger", description = "Bring-your-own-key storage for AI provider keys: write-only, event-sourced, audited."),
    components(schemas(
        Problem, ProviderName, MaskedKey, VerificationView, OrgStatus, KeyList, ProviderOrder,
        keys::StoreKeyRequest, keys::RotateKeyRequest, keys::UpdateKeyRequest,
        orgs::PlanRequest, orgs::ByokAccessRequest, orgs::ProviderOrderRequest,
        audit::AuditPage, audit::AuditVerification, usage::UsageReport, usage::CallList, usage::CallView, usage::RecordUsageRequest, usage::UsageRecorded,
        openai::ModelList, openai::ModelView,
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

/// The OpenAPI 3.1 document of this API, generated from the code.
pub(crate) async fn openapi_json() -> impl axum::response::IntoResponse {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let json =
        DOCUMENT.get_or_init(|| crate::router::document().to_pretty_json().unwrap_or_default());
    ([(axum::http::header::CONTENT_TYPE, "application/json")], json.as_str())
}

#[cfg(test)]
mod tests {
    fn document() -> serde_json::Value {
        serde_json::from_str(&crate::router::document().to_json().expect("json"))
            .expect("a document")
    }

    #[test]
    fn query_parameters_are_in_the_query_and_optional() {
        let doc = document();
        for name in ["as_of", "after", "limit", "from", "to", "group_by"] {
            let mut found = 0;
            for (path, methods) in doc["paths"].as_object().expect("paths") {
                for (_, operation) in methods.as_object().expect("methods") {
                    for param in operation["parameters"].as_array().into_iter().flatten() {
                        if param["name"] == name {
                            found += 1;
                            assert_eq!(param["in"], "query", "{path} {name}");
                            assert_ne!(param["required"], true, "{path} {name}");
                        }
                    }
                }
            }
            assert!(found > 0, "{name} is documented");
        }
    }

    #[test]
    fn path_parameters_say_what_they_accept() {
        let doc = document();
        let key = &doc["paths"]["/v1/orgs/{org}/keys/{provider}"]["get"]["parameters"];
        let params = key.as_array().expect("parameters");
        let org = params.iter().find(|p| p["name"] == "org").expect("org");
        assert_eq!(org["schema"]["pattern"], r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$");
        let provider = params.iter().find(|p| p["name"] == "provider").expect("provider");
        let reference = provider["schema"]["$ref"].as_str().expect("a reference");
        let name = reference.rsplit('/').next().expect("a name");
        let ids: Vec<String> = doc["components"]["schemas"][name]["enum"]
            .as_array()
            .expect("an enum")
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect();
        let registry: Vec<String> =
            keyledger_domain::ProviderId::ALL.iter().map(|p| p.as_str().to_owned()).collect();
        assert_eq!(ids, registry, "the document's providers are the registry's");
    }
}
