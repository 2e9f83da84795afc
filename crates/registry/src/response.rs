//! Registry responses turned into results: status checks that carry the registry's own error
//! message, bounded reads of small bodies, and the error chain of a failed request.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::{Response, StatusCode};
use serde::Deserialize;

use crate::error::RegistryError;
use crate::transport::Repo;

/// The error for a response with an unexpected status (whatever `check_status` would say).
pub(crate) async fn status_error(repo: &Repo, object: &str, response: Response) -> RegistryError {
    match check_status(repo, object, response, &[]).await {
        Err(error) => error,
        Ok(_) => unreachable!("no status is expected"),
    }
}

/// Passes a response with one of the `expected` statuses; turns any other into an error carrying
/// the registry's own message.
pub(crate) async fn check_status(
    repo: &Repo,
    object: &str,
    response: Response,
    expected: &[StatusCode],
) -> Result<Response, RegistryError> {
    let status = response.status();
    if expected.contains(&status) {
        return Ok(response);
    }
    let body = read_capped(repo, object, response, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let message = error_message_from_body(&String::from_utf8_lossy(&body));
    if status == StatusCode::NOT_FOUND {
        return Err(repo.not_found(object, message));
    }
    Err(RegistryError::Status {
        registry: repo.registry.clone(),
        repository: repo.repository.clone(),
        object: object.to_owned(),
        status,
        message,
    })
}

const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Reads a whole body that should be small (manifests, error documents), failing past `limit`
/// bytes so a misbehaving server cannot exhaust memory.
pub(crate) async fn read_capped(
    repo: &Repo,
    object: &str,
    response: Response,
    limit: u64,
) -> Result<Bytes, RegistryError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(repo.protocol(
            object,
            format!("response is larger than the {limit}-byte limit"),
        ));
    }
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| repo.transfer(object, &e))?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(repo.protocol(
                object,
                format!("response is larger than the {limit}-byte limit"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[derive(Deserialize)]
struct ErrorDocument {
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// The text of a distribution-spec error body (`{"errors":[{"code","message"}]}`) as
/// `CODE: message; …`, or a trimmed excerpt of any other body.
pub(crate) fn error_message_from_body(body: &str) -> String {
    if let Ok(doc) = serde_json::from_str::<ErrorDocument>(body) {
        let parts: Vec<String> = doc
            .errors
            .iter()
            .map(|e| match (e.code.is_empty(), e.message.is_empty()) {
                (false, false) => format!("{}: {}", e.code, e.message),
                (false, true) => e.code.clone(),
                _ => e.message.clone(),
            })
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let trimmed = body.trim();
    match trimmed.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_owned(),
    }
}

/// An error with its causes on one line: reqwest's top-level message alone ("error sending
/// request") does not say that the connection was refused.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_become_messages() {
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}},{"code":"DENIED","message":""}]}"#;
        assert_eq!(
            error_message_from_body(body),
            "MANIFEST_UNKNOWN: manifest unknown; DENIED"
        );
        assert_eq!(error_message_from_body("  plain text \n"), "plain text");
        assert_eq!(error_message_from_body(""), "");
        let long = "x".repeat(500);
        assert_eq!(error_message_from_body(&long).chars().count(), 201);
    }
}
