//! Which client headers never reach an upstream, and which headers make a
//! request ambiguous.
//!
//! Names are compared after folding (`X-Cedar_Principal` and
//! `x-cedar-principal` are one name to a WSGI or CGI upstream, which turns
//! both into `HTTP_X_CEDAR_PRINCIPAL`).

/// Hop-by-hop headers (RFC 9110 §7.6.1) and proxy credentials: they are
/// meant for this hop only. Framing (`transfer-encoding`) is left to the
/// proxy, which re-frames the body itself.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Headers that make an upstream serve or act on something other than the
/// request that was decided (a path or method override), or that common
/// upstreams take as an already verified user. No client may send them.
const OVERRIDES: [&str; 9] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "remote-user",
    "x-remote-user",
    "x-auth-request-user",
    "x-auth-request-email",
];

/// Headers that must appear at most once, whatever the mapping reads: a
/// host reads one copy, and an upstream could read another.
pub(crate) const SINGLE: [&str; 3] = ["authorization", "host", "x-real-ip"];

/// A header name as upstreams may read it: lower case, `_` as `-`.
pub fn fold_header_name(name: &str) -> String {
    name.chars()
        .map(|ch| match ch {
            '_' => '-',
            other => other.to_ascii_lowercase(),
        })
        .collect()
}

/// The names (as sent) of the headers to remove before forwarding: the
/// `protected` ones (already folded), hop-by-hop ones, path, method and
/// user overrides, and any header that a `Connection` header names.
pub(crate) fn to_remove<'a>(
    protected: &[String],
    headers: impl Iterator<Item = (&'a str, &'a [u8])> + Clone,
) -> Vec<String> {
    let nominated: Vec<String> = headers
        .clone()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, value)| {
            String::from_utf8_lossy(value)
                .split(',')
                .map(|token| fold_header_name(token.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut names: Vec<String> = headers
        .filter(|(name, _)| !name.starts_with(':'))
        .filter(|(name, _)| {
            let folded = fold_header_name(name);
            protected.contains(&folded)
                || HOP_BY_HOP.contains(&folded.as_str())
                || OVERRIDES.contains(&folded.as_str())
                || nominated.contains(&folded)
        })
        .map(|(name, _)| name.to_owned())
        .collect();
    names.dedup();
    names
}

/// Refuses a request that carries a single-value header (`single`, folded)
/// more than once, in any spelling, or more than one `Authorization`
/// credential. Envoy joins repeated headers into one value with commas, and
/// a bearer token never holds one, so for `Authorization` each comma counts
/// as one more credential: an upstream could read one that was not the one
/// verified.
pub(crate) fn check(headers: &[(String, Vec<u8>)], single: &[String]) -> Result<(), String> {
    for name in single {
        let values = headers
            .iter()
            .filter(|(header, _)| fold_header_name(header) == *name)
            .map(|(_, value)| value);
        let (count, what) = if name == "authorization" {
            let credentials = values
                .map(|value| 1 + value.iter().filter(|&&byte| byte == b',').count())
                .sum();
            (credentials, "credentials")
        } else {
            (values.count(), "headers")
        };
        if count > 1 {
            return Err(format!("{count} `{name}` {what}; at most one is accepted"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn protected_hop_by_hop_and_nominated_headers_are_removed_in_any_spelling() {
        let sent = headers(&[
            ("X-Cedar_Principal", "alice"),
            ("x_cedar_principal", "alice"),
            ("connection", "close, X_Secret"),
            ("x-secret", "1"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic eA=="),
            ("accept", "*/*"),
        ]);
        let removed = to_remove(
            &["x-cedar-principal".to_owned()],
            sent.iter()
                .map(|(name, value)| (name.as_str(), value.as_slice())),
        );
        assert_eq!(
            removed,
            [
                "X-Cedar_Principal",
                "x_cedar_principal",
                "connection",
                "x-secret",
                "upgrade",
                "keep-alive",
                "te",
                "proxy-authorization"
            ]
        );
    }

    #[test]
    fn one_credential_passes_and_two_in_any_form_are_refused() {
        let single = ["authorization".to_owned()];
        assert!(check(&headers(&[("authorization", "Bearer a.b.c")]), &single).is_ok());
        assert!(check(&headers(&[("x-other", "a, b")]), &single).is_ok());
        assert!(check(&[], &single).is_ok());
        for refused in [
            headers(&[("authorization", "Basic eHl6,Bearer a.b.c")]),
            headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
            headers(&[("authorization", "Bearer a"), ("Authorization", "Bearer b")]),
        ] {
            let reason = check(&refused, &single).unwrap_err();
            assert!(reason.contains("2 `authorization`"), "{reason}");
        }
    }

    #[test]
    fn a_single_value_header_sent_twice_in_any_spelling_is_refused() {
        let single = ["authorization".to_owned(), "x-real-ip".to_owned()];
        assert!(
            check(
                &headers(&[("authorization", "a"), ("accept", "b")]),
                &single
            )
            .is_ok()
        );
        let twice = headers(&[("Authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert!(
            check(&twice, &single)
                .unwrap_err()
                .contains("`authorization`")
        );
        let folded = headers(&[("X-Real-IP", "10.0.0.1"), ("x_real_ip", "10.0.0.2")]);
        assert!(check(&folded, &single).is_err());
    }
}
