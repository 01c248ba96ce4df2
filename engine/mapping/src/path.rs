//! The canonical request target: the one spelling of a path that is both
//! decided and forwarded.
//!
//! Upstreams disagree on how they read a path (`//` merged or not, `%61`
//! decoded or not, `..` resolved or not, `;` parameters honoured or not).
//! Any spelling that two readers could see differently is refused here, and
//! the only rewrite is the one RFC 3986 calls equivalent: percent-encoded
//! unreserved characters are decoded and the remaining escapes get
//! upper-case hex. Whatever the host forwards is this canonical form.

use serde::Deserialize;

/// What to do with `;` parameters in path segments (`admin;jsessionid=1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathParameters {
    /// Refuse the request with 400 (the default).
    #[default]
    Reject,
    /// Remove each segment's parameters, for the decision and for the
    /// upstream alike.
    Strip,
}

/// Why a request target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an origin-form target.
    #[error("the path does not start with `/`")]
    NotAbsolute,
    /// A byte the URI grammar does not allow there.
    #[error("the path holds the byte 0x{0:02x}, which a URI does not allow")]
    ForbiddenByte(u8),
    /// `%` not followed by two hex digits.
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    /// `%2F` or `%5C`: a separator in disguise.
    #[error("the path encodes `{0}`, which is refused")]
    EncodedSeparator(&'static str),
    /// `%00` to `%1F` or `%7F`: a control byte, which upstreams trim,
    /// split on or stop at (`admin%00.txt`, `admin%0A`).
    #[error("the path encodes the control byte 0x{0:02x}")]
    EncodedControl(u8),
    /// `%25` followed by hex digits: an escape meant to be decoded twice.
    #[error("the path is percent-encoded twice (`%25` before hex digits)")]
    DoubleEncoded,
    /// `//`, or a segment that is empty once its parameters are stripped.
    #[error("the path has an empty segment")]
    EmptySegment,
    /// `.` or `..`, plain or encoded, or a segment ending in `.`.
    #[error("the path has a dot segment")]
    DotSegment,
    /// `;` parameters where they are refused.
    #[error("the path has `;` parameters")]
    Parameters,
    /// A fragment: clients never send one.
    #[error("the request target has a fragment")]
    Fragment,
}

/// A canonical request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The canonical path.
    pub path: String,
    /// The query, without `?`, checked against the URI grammar but not
    /// rewritten.
    pub query: Option<String>,
}

impl Target {
    /// Path and query, as forwarded.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Canonicalises a raw request target (`:path` with any query).
pub fn canonicalize(raw: &str, parameters: PathParameters) -> Result<Target, PathError> {
    if raw.contains('#') {
        return Err(PathError::Fragment);
    }
    let (path, query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };
    if let Some(query) = query {
        check_query(query)?;
    }
    let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut canonical = String::with_capacity(path.len());
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        canonical.push('/');
        // A trailing `/` is the one empty segment kept: apps tell `/dir/`
        // from `/dir`, and routes match both alike.
        if segment.is_empty() && segments.peek().is_none() {
            break;
        }
        canonical.push_str(&segment_form(segment, parameters)?);
    }
    Ok(Target {
        path: canonical,
        query: query.map(str::to_owned),
    })
}

/// One segment in canonical form, or why it is refused.
fn segment_form(segment: &str, parameters: PathParameters) -> Result<String, PathError> {
    let segment = match segment.split_once(';') {
        Some(_) if parameters == PathParameters::Reject => return Err(PathError::Parameters),
        Some((before, _)) => before,
        None => segment,
    };
    let bytes = segment.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let high = bytes.get(index + 1).and_then(|b| hex_value(*b));
            let low = bytes.get(index + 2).and_then(|b| hex_value(*b));
            let (Some(high), Some(low)) = (high, low) else {
                return Err(PathError::BadEscape);
            };
            let decoded = (high << 4) | low;
            match decoded {
                b'/' => return Err(PathError::EncodedSeparator("/")),
                b'\\' => return Err(PathError::EncodedSeparator("\\")),
                control if control.is_ascii_control() => {
                    return Err(PathError::EncodedControl(control));
                }
                byte if is_unreserved(byte) => out.push(char::from(byte)),
                byte => out.push_str(&format!("%{byte:02X}")),
            }
            index += 3;
        } else if is_unreserved(byte) || is_sub_delim(byte) || byte == b':' || byte == b'@' {
            out.push(char::from(byte));
            index += 1;
        } else {
            return Err(PathError::ForbiddenByte(byte));
        }
    }
    // Checked on the output, so that `%25%41%42` (which becomes `%25AB`)
    // is caught as surely as `%25ab`.
    let escaped_percent = out.match_indices("%25").any(|(at, _)| {
        out.as_bytes()
            .get(at + 3..at + 5)
            .is_some_and(|pair| pair.iter().all(|b| hex_value(*b).is_some()))
    });
    if escaped_percent {
        return Err(PathError::DoubleEncoded);
    }
    if out.is_empty() {
        return Err(PathError::EmptySegment);
    }
    // `.`, `..`, and `admin.`, which some file systems read as `admin`.
    if out.ends_with('.') {
        return Err(PathError::DotSegment);
    }
    Ok(out)
}

/// The query is never decided on, only forwarded: it keeps its spelling,
/// and besides RFC 3986's characters it may hold the few that browsers
/// send unencoded there (`filter[a]=1`, `q={x|y}`).
fn check_query(query: &str) -> Result<(), PathError> {
    let bytes = query.as_bytes();
    for (index, &byte) in bytes.iter().enumerate() {
        let allowed = is_unreserved(byte)
            || is_sub_delim(byte)
            || matches!(byte, b':' | b'@' | b'/' | b'?' | b'%')
            || matches!(byte, b'[' | b']' | b'{' | b'}' | b'|' | b'^');
        if !allowed {
            return Err(PathError::ForbiddenByte(byte));
        }
        if byte == b'%'
            && !bytes
                .get(index + 1..index + 3)
                .is_some_and(|pair| pair.iter().all(|b| hex_value(*b).is_some()))
        {
            return Err(PathError::BadEscape);
        }
    }
    Ok(())
}

fn hex_value(byte: u8) -> Option<u8> {
    char::from(byte)
        .to_digit(16)
        .and_then(|digit| u8::try_from(digit).ok())
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(byte: u8) -> bool {
    matches!(
        byte,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn canonical(raw: &str) -> Result<String, PathError> {
        canonicalize(raw, PathParameters::Reject).map(|target| target.path_and_query())
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(canonical("/%61dmin/x%2dy"), Ok("/admin/x-y".to_owned()));
        assert_eq!(canonical("/a%3ab%c3%a9"), Ok("/a%3Ab%C3%A9".to_owned()));
        assert_eq!(canonical("/"), Ok("/".to_owned()));
        assert_eq!(canonical("/a/"), Ok("/a/".to_owned()));
        assert_eq!(canonical("/%25/100%25"), Ok("/%25/100%25".to_owned()));
        assert_eq!(canonical("/a?b=%2f&c"), Ok("/a?b=%2f&c".to_owned()));
        assert_eq!(
            canonical("/a?labels[]=x&q={a|b}"),
            Ok("/a?labels[]=x&q={a|b}".to_owned())
        );
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for (raw, expected) in [
            ("//admin", PathError::EmptySegment),
            ("/a//", PathError::EmptySegment),
            ("/a//b", PathError::EmptySegment),
            ("/./admin", PathError::DotSegment),
            ("/x/../admin", PathError::DotSegment),
            ("/%2e/admin", PathError::DotSegment),
            ("/x/%2E%2e/admin", PathError::DotSegment),
            ("/x/.%2e/admin", PathError::DotSegment),
            ("/admin.", PathError::DotSegment),
            ("/admin%2fsecret", PathError::EncodedSeparator("/")),
            ("/admin%2Fsecret", PathError::EncodedSeparator("/")),
            ("/admin%5csecret", PathError::EncodedSeparator("\\")),
            ("/admin%00", PathError::EncodedControl(0)),
            ("/admin%0a", PathError::EncodedControl(b'\n')),
            ("/admin%7F", PathError::EncodedControl(0x7f)),
            ("/%252e/admin", PathError::DoubleEncoded),
            ("/%252E/admin", PathError::DoubleEncoded),
            ("/%25%32%65/admin", PathError::DoubleEncoded),
            ("/admin\\secret", PathError::ForbiddenByte(b'\\')),
            ("/admin secret", PathError::ForbiddenByte(b' ')),
            ("/admin;jsessionid=1", PathError::Parameters),
            ("/a%zz", PathError::BadEscape),
            ("/a%2", PathError::BadEscape),
            ("/a#frag", PathError::Fragment),
            ("admin", PathError::NotAbsolute),
            ("/a?b c", PathError::ForbiddenByte(b' ')),
            ("/a?b\"c", PathError::ForbiddenByte(b'"')),
            ("/a[0]", PathError::ForbiddenByte(b'[')),
        ] {
            assert_eq!(canonical(raw), Err(expected), "{raw}");
        }
    }

    #[test]
    fn parameters_can_be_stripped_instead() {
        let target = canonicalize("/admin;jsessionid=1/x;y", PathParameters::Strip).unwrap();
        assert_eq!(target.path, "/admin/x");
        assert_eq!(
            canonicalize("/;x/admin", PathParameters::Strip),
            Err(PathError::EmptySegment)
        );
    }

    #[test]
    fn the_canonical_form_is_a_fixed_point() {
        for raw in [
            "/%61dmin/%c3%a9",
            "/a/b~c?x=1",
            "/v2/ns/repo/manifests/sha256:ab",
            "/100%25/%25zz/",
        ] {
            let once = canonical(raw).unwrap();
            assert_eq!(canonical(&once).unwrap(), once);
        }
    }
}
