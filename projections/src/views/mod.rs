//! The views, one module each.

mod keys;
mod org_directory;
mod org_status;
mod provider_order;
mod usage;

use std::sync::Arc;

pub use crate::audit::AuditLog;
pub use keys::{rows_of_orgs, KeysView};
pub use org_directory::OrgDirectory;
pub use org_status::OrgStatusView;
pub use provider_order::ProviderOrderView;
pub use usage::UsageCockpit;

use crate::projector::Projection;

/// Every projection keyledger keeps, the usage cockpit listing calls for `retention` (all of
/// them if `None`), the audit trail keeping checkpoints signed by `signer`.
#[must_use]
pub fn all(
    retention: Option<crate::CallRetention>,
    signer: Option<Arc<dyn crate::audit_tree::CheckpointSigner>>,
) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(KeysView),
        Arc::new(ProviderOrderView),
        Arc::new(OrgStatusView),
        Arc::new(OrgDirectory),
        Arc::new(AuditLog { signer, ..AuditLog::default() }),
        Arc::new(UsageCockpit { retention }),
    ]
}

/// `($1, $2, …), (…)` for `rows` rows of `columns` values.
pub(crate) fn values_placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=columns).map(|c| format!("${}", r * columns + c)).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
