//! API keys: reading them, and the middleware that checks `Authorization: Bearer <key>`.

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use super::AppState;
use super::metrics::{Endpoint, Outcome};
use super::routes::ApiError;
use crate::error::{Error, Result};

/// Reads API keys from a file: one per line; blank lines and lines starting with `#` are
/// skipped. A file without any key is an error (it would silently disable authentication).
pub fn read_api_keys(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    if keys.is_empty() {
        return Err(Error::format(path, "no API key in the file (one per line)"));
    }
    if let Some(k) = keys.iter().find(|k| k.len() < 16) {
        return Err(Error::format(
            path,
            format!(
                "API key of {} characters is too short to be secret; use at least 16",
                k.len()
            ),
        ));
    }
    Ok(keys)
}

pub(super) fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub(super) async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if st.key_digests.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| digest(k.trim()));
    // Compare digests in full for every key, so timing says nothing about a key's prefix.
    let ok = given.is_some_and(|g| {
        st.key_digests.iter().fold(false, |acc, d| {
            acc | (d.iter().zip(&g).fold(0u8, |x, (a, b)| x | (a ^ b)) == 0)
        })
    });
    if ok {
        return next.run(req).await;
    }
    if let Some(e) = Endpoint::from_path(req.uri().path()) {
        st.metrics.request(e, Outcome::Unauthorized);
    }
    tracing::warn!(path = %req.uri().path(), "refused: missing or invalid API key");
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        Outcome::Unauthorized,
        "missing or invalid API key: send `Authorization: Bearer <key>`",
    )
    .into_response()
}
