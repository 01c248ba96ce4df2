//! The gateway's written form of a Git source, and the checks on each part.
//!
//! Every part ends up as an argument to `git`, so each is held to a narrow
//! shape here, before any command runs: a ref or folder that git would read
//! as an option, a revision expression or a path outside the tree never
//! gets that far.

use std::fmt;

/// The transports a source may use. Others (`ext::`, which runs a command,
/// or scp-like `host:path`) are refused; `git` is told the same list.
pub(super) const ALLOWED_SCHEMES: &[&str] = &["http", "https", "git", "ssh", "file"];

/// The longest ref name or folder accepted.
const MAX_NAME_LEN: usize = 1024;

/// The branch or tag a source follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GitRef {
    /// A branch, by its name without `refs/heads/`.
    Branch(String),
    /// A tag, by its name without `refs/tags/`.
    Tag(String),
}

impl GitRef {
    /// The full ref name on the remote, e.g. `refs/heads/main`.
    pub fn full_name(&self) -> String {
        match self {
            Self::Branch(name) => format!("refs/heads/{name}"),
            Self::Tag(name) => format!("refs/tags/{name}"),
        }
    }

    /// Reads `main`, `branch=main`, `tag=v3`, `refs/heads/main` or
    /// `refs/tags/v3`. A bare name is a branch.
    pub fn parse(text: &str) -> Result<Self, GitSpecError> {
        let reference = if let Some(name) = text.strip_prefix("branch=") {
            Self::Branch(name.to_owned())
        } else if let Some(name) = text.strip_prefix("tag=") {
            Self::Tag(name.to_owned())
        } else if let Some(name) = text.strip_prefix("refs/heads/") {
            Self::Branch(name.to_owned())
        } else if let Some(name) = text.strip_prefix("refs/tags/") {
            Self::Tag(name.to_owned())
        } else if text.starts_with("refs/") {
            return Err(GitSpecError::new(
                SpecPart::Ref,
                text,
                "is neither under `refs/heads/` nor under `refs/tags/`",
            ));
        } else {
            Self::Branch(text.to_owned())
        };
        reference.validate()?;
        Ok(reference)
    }

    fn name(&self) -> &str {
        match self {
            Self::Branch(name) | Self::Tag(name) => name,
        }
    }

    /// Git's own rules for ref names (`git check-ref-format`), plus no
    /// leading `-`, so that a name can never read as an option.
    pub(super) fn validate(&self) -> Result<(), GitSpecError> {
        let name = self.name();
        let fail = |reason: &str| Err(GitSpecError::new(SpecPart::Ref, name, reason));
        if name.is_empty() {
            return fail("is empty");
        }
        if name.len() > MAX_NAME_LEN {
            return fail("is too long");
        }
        if name.starts_with('-') {
            return fail("must not start with `-`");
        }
        if name == "@" {
            return fail("must not be `@`");
        }
        if name.contains("..") {
            return fail("must not contain `..`");
        }
        if name.contains("@{") {
            return fail("must not contain `@{`");
        }
        if let Some(bad) = name
            .chars()
            .find(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(*c))
        {
            return fail(&format!("must not contain {bad:?}"));
        }
        if name.ends_with('.') {
            return fail("must not end with `.`");
        }
        for component in name.split('/') {
            if component.is_empty() {
                return fail("has an empty `/` component");
            }
            if component.starts_with('.') {
                return fail("has a component starting with `.`");
            }
            if component.ends_with(".lock") {
                return fail("has a component ending with `.lock`");
            }
        }
        Ok(())
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full_name())
    }
}

/// Which part of a source's written form is at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecPart {
    /// The whole form: no `git+` prefix or no `#`.
    Form,
    /// The remote's URL.
    Url,
    /// The branch or tag.
    Ref,
    /// The bundle's folder in the repository.
    Subdir,
}

impl fmt::Display for SpecPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Form => "source",
            Self::Url => "url",
            Self::Ref => "ref",
            Self::Subdir => "subdir",
        })
    }
}

/// A Git source's written form, or one of its parts, that is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[error("invalid git source: {part} `{value}` {reason}")]
#[diagnostic(code(cedar_edge::git::spec))]
pub struct GitSpecError {
    /// The part at fault.
    pub part: SpecPart,
    /// That part as given (a URL with its credentials hidden).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl GitSpecError {
    pub(super) fn new(part: SpecPart, value: &str, reason: &str) -> Self {
        let value = match part {
            SpecPart::Url | SpecPart::Form => redact_url(value),
            SpecPart::Ref | SpecPart::Subdir => value.to_owned(),
        };
        Self {
            part,
            value,
            reason: reason.to_owned(),
        }
    }
}

/// Splits `git+URL#REF[:SUBDIR]` into its three parts, unchecked.
pub(super) fn split(spec: &str) -> Result<(&str, &str, &str), GitSpecError> {
    let Some(rest) = spec.strip_prefix("git+") else {
        return Err(GitSpecError::new(
            SpecPart::Form,
            spec,
            "must start with `git+`",
        ));
    };
    // A URL for git has no fragment of its own: the first `#` ends it.
    let Some((url, fragment)) = rest.split_once('#') else {
        return Err(GitSpecError::new(
            SpecPart::Form,
            spec,
            "has no `#REF` after the URL",
        ));
    };
    // Ref names cannot hold `:`, so the first one ends the ref.
    Ok(match fragment.split_once(':') {
        Some((reference, subdir)) => {
            if subdir.is_empty() {
                return Err(GitSpecError::new(
                    SpecPart::Subdir,
                    subdir,
                    "is empty (leave out `:` for the repository's root)",
                ));
            }
            (url, reference, subdir)
        }
        None => (url, fragment, ""),
    })
}

/// Accepts `SCHEME://…` for the schemes git is allowed to use here.
pub(super) fn validate_url(url: &str) -> Result<(), GitSpecError> {
    let fail = |reason: &str| Err(GitSpecError::new(SpecPart::Url, url, reason));
    let Some((scheme, rest)) = url.split_once("://") else {
        return fail("has no `scheme://`");
    };
    if !ALLOWED_SCHEMES
        .iter()
        .any(|allowed| scheme.eq_ignore_ascii_case(allowed))
    {
        return fail(&format!(
            "uses a scheme other than {}",
            ALLOWED_SCHEMES.join(", ")
        ));
    }
    if rest.is_empty() {
        return fail("names no repository");
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return fail("must not contain spaces or control characters");
    }
    Ok(())
}

/// Accepts a relative folder path of plain `/`-separated names (a trailing
/// `/` is dropped); the empty path is the repository's root.
pub(super) fn normalize_subdir(subdir: &str) -> Result<String, GitSpecError> {
    let fail = |reason: &str| Err(GitSpecError::new(SpecPart::Subdir, subdir, reason));
    let trimmed = subdir.trim_end_matches('/');
    if trimmed.is_empty() {
        return if subdir.is_empty() {
            Ok(String::new())
        } else {
            fail("must be relative to the repository's root")
        };
    }
    if trimmed.len() > MAX_NAME_LEN {
        return fail("is too long");
    }
    if trimmed.starts_with('/') {
        return fail("must be relative to the repository's root");
    }
    if trimmed.starts_with('-') {
        return fail("must not start with `-`");
    }
    if trimmed.chars().any(|c| c.is_control() || c == '\\') {
        return fail("must not contain `\\` or control characters");
    }
    for component in trimmed.split('/') {
        match component {
            "" => return fail("has an empty `/` component"),
            "." | ".." => return fail("must not contain `.` or `..` components"),
            _ => {}
        }
    }
    Ok(trimmed.to_owned())
}

/// The URL with any `user:password@` replaced, for messages and logs.
pub(super) fn redact_url(url: &str) -> String {
    // A query string may hold a token (`?private_token=…`): never shown.
    let url = match url.split_once('?') {
        Some((base, _)) => return format!("{}?***", redact_url(base)),
        None => url,
    };
    let (head, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or(rest);
    match authority.rfind('@') {
        Some(at) => format!("{head}***{}", rest.get(at..).unwrap_or_default()),
        None => url.to_owned(),
    }
}
