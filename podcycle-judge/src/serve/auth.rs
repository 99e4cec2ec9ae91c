//! Optional bearer authentication of the judge's API (`--api-token-file`), for clusters
//! where no NetworkPolicy keeps other pods away from it: `/v1/*` needs
//! `Authorization: Bearer <token>`; anything else gets `401` with `WWW-Authenticate:
//! Bearer`. The token is compared in constant time and never logged.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

/// Reads the token: the file's content, trimmed; one non-empty line of visible ASCII (what
/// an `Authorization` header can carry). The message names the flag and the path, never
/// the content.
pub(super) fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--api-token-file: cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "--api-token-file: {} must hold one non-empty token of visible ASCII characters \
             (no spaces or line breaks)",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

/// `routes` with every request checked for the bearer `token`.
pub(super) fn require<S>(routes: Router<S>, token: String) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let expected: std::sync::Arc<[u8]> = format!("Bearer {token}").into_bytes().into();
    routes.route_layer(axum::middleware::from_fn_with_state(expected, check))
}

async fn check(
    State(expected): State<std::sync::Arc<[u8]>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map_or(&[][..], HeaderValue::as_bytes);
    if constant_time_eq(given, &expected) {
        return next.run(request).await;
    }
    let message = if given.is_empty() {
        "this judge requires 'Authorization: Bearer <token>' (--api-token-file)"
    } else {
        "the bearer token is not the one this judge expects"
    };
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": message, "field": null })),
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"podcycle-judge\""),
    );
    response
}

/// Whether `a == b`, in a time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn status(app: &Router, authorization: Option<&str>) -> (StatusCode, Option<String>) {
        let mut request = axum::http::Request::get("/v1/x");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = app
            .clone()
            .oneshot(request.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        let challenge = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status(), challenge)
    }

    #[tokio::test]
    async fn only_the_token_opens_the_api() {
        let app = require(
            Router::new().route("/v1/x", get(|| async { "ok" })),
            "s3cret".to_owned(),
        );
        assert_eq!(status(&app, Some("Bearer s3cret")).await.0, StatusCode::OK);
        for wrong in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
        ] {
            let (code, challenge) = status(&app, wrong).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{wrong:?}");
            assert_eq!(
                challenge.as_deref(),
                Some("Bearer realm=\"podcycle-judge\"")
            );
        }
    }

    #[test]
    fn tokens_are_read_trimmed_and_checked() {
        let dir = std::env::temp_dir().join(format!("judge-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "abc.def\n").unwrap();
        assert_eq!(read_token(&path).unwrap(), "abc.def");
        for bad in ["", "\n", "two words", "a\nb"] {
            std::fs::write(&path, bad).unwrap();
            let e = read_token(&path).unwrap_err();
            assert!(e.contains("--api-token-file"), "{e}");
            assert!(
                !bad.trim().is_empty() && !e.contains(bad.trim()) || bad.trim().is_empty(),
                "{e}"
            );
        }
        assert!(read_token(&dir.join("missing"))
            .unwrap_err()
            .contains("cannot read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
