//! The admin console at `/admin/ui/`: one page and its script and style,
//! embedded in the binary (no CDN: it works offline). The page needs no
//! token to load; it asks for the admin token in a form and sends it with
//! every admin API call from script, so the token never appears in a URL.
//! A strict Content-Security-Policy allows only these same-origin assets:
//! no inline script or style, no other origin.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};

use super::App;
use super::checks::edge::CheckEdge;
use super::checks::layer::CheckLayer;

/// What the console's documents may load and do.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; form-action 'self'; \
frame-ancestors 'none'; base-uri 'none'";

/// The console's files: name, media type, contents.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("admin_ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("admin_ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("admin_ui/app.css"),
    ),
];

/// The console's routes under `/admin` (behind the edge checks, not the token).
pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/admin/ui/") }))
        .route("/ui/", get(|| async { asset("index.html") }))
        .route(
            "/ui/{file}",
            get(|Path(file): Path<String>| async move { asset(&file) }),
        )
        .route_layer(CheckLayer(CheckEdge(app.edge.clone())))
}

/// One of the console's files, with the headers every one carries.
fn asset(name: &str) -> Response {
    let Some((_, media_type, body)) = ASSETS.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such console file\n").into_response();
    };
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(media_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(POLICY),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, *body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        let page = ASSETS[0].2;
        assert!(page.contains("src=\"app.js\""), "{page}");
        for (name, _, body) in ASSETS {
            // No inline script, handler or style: the policy would block them.
            let lower = body.to_ascii_lowercase();
            if name.ends_with(".html") {
                assert!(!lower.contains("<script>"), "{name}: inline script");
                assert!(!lower.contains(" style="), "{name}: inline style");
                assert!(!lower.contains(" onclick="), "{name}: inline handler");
            }
            assert!(
                !lower.contains("http://") && !lower.contains("https://"),
                "{name}: another origin"
            );
        }
    }

    #[test]
    fn unknown_files_are_not_found() {
        assert_eq!(asset("../Cargo.toml").status(), StatusCode::NOT_FOUND);
        let page = asset("index.html");
        assert_eq!(page.status(), StatusCode::OK);
        assert!(
            page.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
    }
}
