//! Evidence an auditor can keep: signed checkpoints of an organization's audit trail, the keys
//! that sign them, and RFC 6962 proofs that an entry is in a tree and that one tree extends
//! another.

use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Access, Caller};
use crate::error::{ApiError, ErrorCode, Problem};
use crate::extract::OrgParam;
use crate::openapi::OrgPath;
use crate::routes::audit::query;
use crate::state::AppState;
use keyledger_projections::audit_tree::{self, Checkpoint};

/// A key that signs, or has signed, checkpoints.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SigningKeyBody {
    /// The first 16 hex characters of SHA-256 of the public key.
    key_id: String,
    /// Always `ed25519`.
    algorithm: &'static str,
    /// The 32-byte public key, base64.
    public_key: String,
}

/// Every key that has signed checkpoints here.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SigningKeys {
    keys: Vec<SigningKeyBody>,
}

/// A signed checkpoint: the organization's trail of `tree_size` entries had this root.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CheckpointBody {
    org: String,
    tree_size: i64,
    /// Hex of the RFC 6962 root of the first `tree_size` entries.
    root_hash: String,
    /// RFC 3339, exactly as signed.
    at: String,
    key_id: String,
    /// Base64 Ed25519 signature over `keyledger-checkpoint/v1\n{org}\n{tree_size}\n{root_hash}\n{at}\n`.
    signature: String,
}

impl From<Checkpoint> for CheckpointBody {
    fn from(c: Checkpoint) -> Self {
        Self {
            org: c.org,
            tree_size: c.tree_size,
            root_hash: c.root_hash,
            at: c.at,
            key_id: c.key_id,
            signature: c.signature,
        }
    }
}

/// A page of kept checkpoints.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CheckpointPage {
    checkpoints: Vec<CheckpointBody>,
    /// Pass as `after` for the next page; `null` at the end.
    next: Option<i64>,
}

/// Query of `GET …/audit/checkpoints`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckpointsQuery {
    /// Checkpoints of trees larger than this.
    #[param(minimum = 0)]
    after: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Query of `GET …/audit/proof/inclusion`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct InclusionQuery {
    /// The entry's sequence number.
    #[param(minimum = 1)]
    seq: i64,
    /// The tree's size; the trail's current length when absent.
    #[param(minimum = 1)]
    tree_size: Option<i64>,
}

/// An inclusion proof.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct InclusionProof {
    /// `seq - 1`.
    leaf_index: u64,
    tree_size: u64,
    /// Hex hashes, bottom up (RFC 6962 §2.1.1).
    proof: Vec<String>,
}

/// Query of `GET …/audit/proof/consistency`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsistencyQuery {
    /// The older tree's size.
    #[param(minimum = 0)]
    from: i64,
    /// The newer tree's size; the trail's current length when absent.
    #[param(minimum = 0)]
    to: Option<i64>,
}

/// A consistency proof.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConsistencyProof {
    from: u64,
    to: u64,
    /// Hex hashes (RFC 6962 §2.1.2).
    proof: Vec<String>,
}

fn store(error: &sqlx::Error) -> ApiError {
    ApiError::from_store(error)
}

/// The size `asked` of a tree of `org`, which has `size` entries: it must exist.
fn existing(asked: i64, size: u64, name: &str) -> Result<u64, ApiError> {
    if asked < 0 {
        return Err(ApiError::invalid_request(format!("{name} is 0 or more")));
    }
    if asked as u64 > size {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("the audit trail has {size} entries: there is no tree of {asked}"),
        ));
    }
    Ok(asked as u64)
}

/// The public keys that sign (and have signed) audit checkpoints. No token needed: an auditor
/// checks a checkpoint with them, offline.
#[utoipa::path(get, path = "/v1/audit/keys", tag = "audit",
    responses((status = 200, body = SigningKeys), (status = "5XX", body = Problem, content_type = "application/problem+json")))]
pub(crate) async fn signing_keys(
    State(state): State<AppState>,
) -> Result<axum::Json<SigningKeys>, ApiError> {
    let keys = audit_tree::signing_keys(&state.views).await.map_err(|e| store(&e))?;
    let keys = keys
        .into_iter()
        .map(|k| SigningKeyBody {
            key_id: k.key_id,
            algorithm: "ed25519",
            public_key: k.public_key,
        })
        .collect();
    Ok(axum::Json(SigningKeys { keys }))
}

/// A signed checkpoint of the organization's audit trail as it stands; signed on demand (and
/// kept), or the one kept for this length already.
#[utoipa::path(get, path = "/v1/orgs/{org}/audit/checkpoint", tag = "audit",
    params(OrgPath),
    responses((status = 200, body = CheckpointBody), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn checkpoint(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
) -> Result<axum::Json<CheckpointBody>, ApiError> {
    caller.authorize(&org, Access::ReadAudit)?;
    state.settle(&org).await;
    let org_id = org.to_string();
    // Signed and kept even if the caller goes: a second ask finds it kept.
    let (views, signer) = (state.views.clone(), state.audit_signer.clone());
    let made = state
        .run_to_the_end(async move {
            crate::checkpoints::current(&views, &signer, &org_id).await.map_err(|e| store(&e))
        })
        .await?;
    match made {
        Some(checkpoint) => Ok(axum::Json(checkpoint.into())),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("the audit trail of {org} has no entries yet: there is nothing to sign"),
        )),
    }
}

/// The organization's kept checkpoints, smallest tree first, a page at a time.
#[utoipa::path(get, path = "/v1/orgs/{org}/audit/checkpoints", tag = "audit",
    params(OrgPath, CheckpointsQuery),
    responses((status = 200, body = CheckpointPage), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn checkpoints(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    params: Result<Query<CheckpointsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<CheckpointPage>, ApiError> {
    caller.authorize(&org, Access::ReadAudit)?;
    let params = query(params)?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_request("limit is 1 to 1000"));
    }
    let after = params.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::invalid_request("after is 0 or more"));
    }
    state.settle(&org).await;
    let kept =
        audit_tree::kept(&state.views, org.as_str(), after, limit).await.map_err(|e| store(&e))?;
    let next = (kept.len() as i64 == limit).then(|| kept.last().map(|c| c.tree_size)).flatten();
    Ok(axum::Json(CheckpointPage { checkpoints: kept.into_iter().map(Into::into).collect(), next }))
}

/// The proof that entry `seq` is in the organization's tree of `tree_size` entries.
#[utoipa::path(get, path = "/v1/orgs/{org}/audit/proof/inclusion", tag = "audit",
    params(OrgPath, InclusionQuery),
    responses((status = 200, body = InclusionProof), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn inclusion_proof(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    params: Result<Query<InclusionQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<InclusionProof>, ApiError> {
    caller.authorize(&org, Access::ReadAudit)?;
    let params = query(params)?;
    let seq = params.seq;
    state.settle(&org).await;
    let size = audit_tree::size(&state.views, org.as_str()).await.map_err(|e| store(&e))?;
    let tree_size = existing(params.tree_size.unwrap_or(size as i64), size, "tree_size")?;
    if seq < 1 {
        return Err(ApiError::invalid_request("seq is 1 or more"));
    }
    if seq as u64 > tree_size {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("the tree of {tree_size} entries has no entry {seq}"),
        ));
    }
    let proof = audit_tree::inclusion(&state.views, org.as_str(), seq as u64, tree_size)
        .await
        .map_err(|e| store(&e))?;
    Ok(axum::Json(InclusionProof {
        leaf_index: seq as u64 - 1,
        tree_size,
        proof: proof.iter().map(hex::encode).collect(),
    }))
}

/// The proof that the organization's tree of `to` entries extends its tree of `from`.
#[utoipa::path(get, path = "/v1/orgs/{org}/audit/proof/consistency", tag = "audit",
    params(OrgPath, ConsistencyQuery),
    responses((status = 200, body = ConsistencyProof), (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub(crate) async fn consistency_proof(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    params: Result<Query<ConsistencyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<ConsistencyProof>, ApiError> {
    caller.authorize(&org, Access::ReadAudit)?;
    let params = query(params)?;
    let from = params.from;
    state.settle(&org).await;
    let size = audit_tree::size(&state.views, org.as_str()).await.map_err(|e| store(&e))?;
    let to = params.to.unwrap_or(size as i64);
    if from > to {
        return Err(ApiError::invalid_request(format!(
            "from ({from}) is larger than to ({to}): a tree only extends a smaller one"
        )));
    }
    let to = existing(to, size, "to")?;
    let from = existing(from, size, "from")?;
    let proof = audit_tree::consistency(&state.views, org.as_str(), from, to)
        .await
        .map_err(|e| store(&e))?;
    Ok(axum::Json(ConsistencyProof { from, to, proof: proof.iter().map(hex::encode).collect() }))
}
