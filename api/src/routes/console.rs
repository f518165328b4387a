//! `/console/`: the keyledger console, a client of this API served from the binary so it works
//! offline and needs nothing built at run time. Its files live in `api/console/`.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::{ApiError, ErrorCode};

/// Every file of the console: its path under `/console/`, its type, its bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../console/index.html")),
    ("console.css", "text/css; charset=utf-8", include_bytes!("../../console/console.css")),
    ("js/app.js", JS, include_bytes!("../../console/js/app.js")),
    ("js/api.js", JS, include_bytes!("../../console/js/api.js")),
    ("js/dom.js", JS, include_bytes!("../../console/js/dom.js")),
    ("js/org.js", JS, include_bytes!("../../console/js/org.js")),
    ("js/order.js", JS, include_bytes!("../../console/js/order.js")),
    ("js/audit.js", JS, include_bytes!("../../console/js/audit.js")),
    ("js/usage.js", JS, include_bytes!("../../console/js/usage.js")),
    ("js/asof.js", JS, include_bytes!("../../console/js/asof.js")),
    ("js/admin.js", JS, include_bytes!("../../console/js/admin.js")),
    ("vendor/uPlot.iife.min.js", JS, include_bytes!("../../console/vendor/uPlot.iife.min.js")),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../console/vendor/uPlot.min.css"),
    ),
    // uPlot's MIT licence travels with the copy of uPlot the binary serves.
    (
        "vendor/uPlot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../console/vendor/uPlot.LICENSE"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The page may load and call only this server: no inline script, no other origin, no frame.
const POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// `/console` → `/console/`, so the page's relative links resolve.
pub(crate) async fn redirect() -> Redirect {
    Redirect::permanent("/console/")
}

/// The console's page.
pub(crate) async fn index() -> Response {
    asset("index.html")
}

/// One of the console's files.
pub(crate) async fn file(Path(path): Path<String>) -> Response {
    asset(&path)
}

fn asset(path: &str) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(name, _, _)| *name == path) else {
        return ApiError::new(ErrorCode::NotFound, "no such file in the console").into_response();
    };
    let mut response = (StatusCode::OK, *bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // The binary is the version: a new release serves new files, so a short cache suffices.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    fn files_under(root: &Path, dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("console dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files_under(root, &path, found);
            } else {
                let relative = path.strip_prefix(root).expect("under root");
                found.insert(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    /// A file added to `api/console/` and not to the list would be a 404 in the browser.
    #[test]
    fn every_file_of_the_console_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut on_disk = BTreeSet::new();
        files_under(&root, &root, &mut on_disk);
        let embedded: BTreeSet<String> =
            super::ASSETS.iter().map(|(name, _, _)| (*name).to_owned()).collect();
        assert_eq!(embedded, on_disk);
    }
}
