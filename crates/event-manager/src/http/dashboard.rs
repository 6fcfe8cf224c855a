//! The dashboard: a single page (`GET /`, `GET /dashboard`) and its script and style sheet
//! (`GET /dashboard/assets/{file}`), embedded in the binary and served as static files.
//!
//! The files need no token: they hold no data. The page asks the user for a token, keeps it
//! in `sessionStorage` only, and sends it with every call to the JSON API, whose own guards
//! (read or admin role, rate limits) decide what it may see and do. Every response carries a
//! strict `Content-Security-Policy` (scripts, styles and connections to this origin only, no
//! inline script, no framing), `X-Content-Type-Options: nosniff`, and `Cache-Control:
//! no-cache` with an `ETag`, so a browser revalidates (a cheap 304) and never runs the assets
//! of an older binary. Why plain JavaScript and no build step: `docs/ARCHITECTURE.md`.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::ApiError;

/// One embedded file.
struct Asset {
    /// Its name under `/dashboard/assets/` (`index.html` is served at `/` instead).
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const PAGE: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_bytes!("dashboard/index.html"),
};

/// The files under `/dashboard/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/app.js"),
    },
    Asset {
        name: "api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/api.js"),
    },
    Asset {
        name: "alerts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/alerts.js"),
    },
    Asset {
        name: "domain.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/domain.js"),
    },
    Asset {
        name: "catalog.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/catalog.js"),
    },
    Asset {
        name: "chain.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/chain.js"),
    },
    Asset {
        name: "live.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/live.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/charts.js"),
    },
    Asset {
        name: "views.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/views.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("dashboard/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("dashboard/favicon.svg"),
    },
];

/// The page may load its own files and call its own origin, nothing else: no inline script,
/// no `eval`, no plugin, no framing by another site, no form posted elsewhere.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes, public: merge them into the API's router outside its guards.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/dashboard", get(page))
        .route("/dashboard/", get(page))
        .route("/dashboard/assets/{file}", get(asset))
}

async fn page(headers: HeaderMap) -> Response {
    respond(&PAGE, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => respond(asset, &headers),
        None => ApiError::not_found(format!("the dashboard has no file {file:?}")).into_response(),
    }
}

/// The file with its headers, or 304 when the browser's copy (`If-None-Match`) is current.
fn respond(asset: &Asset, request: &HeaderMap) -> Response {
    let tag = etag(asset);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(value) = HeaderValue::from_str(tag) {
        headers.insert(header::ETAG, value);
    }
    response
}

/// A strong validator of the file's bytes: FNV-1a over the body, computed once per file.
fn etag(asset: &Asset) -> &'static str {
    static TAGS: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        std::iter::once(&PAGE)
            .chain(ASSETS)
            .map(|a| {
                let hash = a.body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
                (a.name, format!("\"{hash:016x}\""))
            })
            .collect()
    });
    tags.iter()
        .find(|(name, _)| *name == asset.name)
        .map_or("\"0\"", |(_, tag)| tag.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_embedded_and_tagged_apart() {
        let mut tags: Vec<&str> = std::iter::once(&PAGE).chain(ASSETS).map(etag).collect();
        assert!(
            std::iter::once(&PAGE)
                .chain(ASSETS)
                .all(|a| !a.body.is_empty())
        );
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), ASSETS.len() + 1);
    }

    #[test]
    fn the_page_has_no_inline_script_and_loads_its_own_modules() {
        let page = std::str::from_utf8(PAGE.body).unwrap();
        for script in page.split("<script").skip(1) {
            let (open, rest) = script.split_once('>').unwrap();
            assert!(open.contains("src=\"/dashboard/assets/"), "{open}");
            assert!(rest.trim_start().starts_with("</script>"), "inline script");
        }
        assert!(
            !page.contains("style=\""),
            "inline styles are refused by the policy"
        );
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no CDN"
        );
    }
}
