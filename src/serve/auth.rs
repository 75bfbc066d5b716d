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
    if let Some(k) = keys.iter().find(|k| k.chars().count() < 16) {
        return Err(Error::format(
            path,
            format!(
                "API key of {} characters is too short to be secret; use at least 16",
                k.chars().count()
            ),
        ));
    }
    Ok(keys)
}

pub(super) fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 9110), the token is not.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

pub(super) async fn auth(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if st.key_digests.is_empty() {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(digest);
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
    if let Some(total) = st
        .metrics
        .auth_failure(st.started.elapsed().as_millis() as u64)
    {
        tracing::warn!(
            path = %req.uri().path(),
            refused_so_far = total,
            "refused: missing or invalid API key (logged at most every 10 s; see defed_auth_failures_total)"
        );
    }
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        Outcome::Unauthorized,
        "missing or invalid API key: send `Authorization: Bearer <key>`",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn key_length_is_counted_in_characters() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        // 8 characters, 24 bytes.
        std::fs::write(&p, "ééééé€€€\n").unwrap();
        let e = read_api_keys(&p).unwrap_err().to_string();
        assert!(e.contains("of 8 characters"), "{e}");
    }
}
