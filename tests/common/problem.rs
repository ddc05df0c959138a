//! Assertions on RFC 9457 problem+json answers (DESIGN §2).

use reqwest::StatusCode;

use super::Resp;

/// Asserts that `r` is a problem with HTTP `status`, whatever its code: the status line, an
/// `application/problem+json` content type, `type`, `title`, `detail` and `code` as non-empty
/// strings, and the `status` member equal to the HTTP status. `what` names the case in failure
/// messages.
pub fn assert_problem_shape(r: &Resp, status: StatusCode, what: &str) {
    assert_eq!(r.status, status, "{what}: {:?}", r.body);
    let ct = r
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/problem+json"),
        "{what}: content-type `{ct}`, body {:?}",
        r.body
    );
    let b = &r.body;
    for field in ["type", "title", "detail", "code"] {
        assert!(
            b[field].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: `{field}` missing or not a non-empty string in {b:?}"
        );
    }
    assert_eq!(
        b["status"].as_u64(),
        Some(u64::from(status.as_u16())),
        "{what}: {b:?}"
    );
}

/// Asserts that `r` is the problem `code` with HTTP `status`: everything
/// [`assert_problem_shape`] checks, and the stable `code`.
pub fn assert_problem(r: &Resp, status: StatusCode, code: &str, what: &str) {
    assert_problem_shape(r, status, what);
    assert_eq!(r.code(), code, "{what}: {:?}", r.body);
}
