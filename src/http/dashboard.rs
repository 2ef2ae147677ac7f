//! The admin dashboard: three static files built into the binary, a client of the admin API. They hold
//! no data and need no key; the page asks for the master key and sends it only to the admin API. Served
//! with a strict content security policy (scripts and styles from this origin only, no framing).

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use super::GatewayError;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /dashboard`.
pub async fn page() -> Response {
    file("text/html; charset=utf-8", INDEX)
}

/// `GET /dashboard/{file}`: the page's script and style sheet.
pub async fn asset(Path(name): Path<String>) -> Result<Response, GatewayError> {
    match name.as_str() {
        "app.js" => Ok(file("text/javascript; charset=utf-8", SCRIPT)),
        "style.css" => Ok(file("text/css; charset=utf-8", STYLE)),
        "index.html" => Ok(file("text/html; charset=utf-8", INDEX)),
        _ => Err(GatewayError::route_not_found(&http::Method::GET, &format!("/dashboard/{name}"))),
    }
}
