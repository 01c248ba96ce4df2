//! Bundle references: `oci://HOST[:PORT]/REPOSITORY:TAG` or
//! `oci://HOST[:PORT]/REPOSITORY@sha256:HEX`.

use std::fmt;
use std::str::FromStr;

use super::OciError;

/// Where a bundle lives: a registry host, a repository in it, and either a
/// tag or a manifest digest.
///
/// The host is always written out (there is no default registry) and so is
/// the version: a policy bundle is named explicitly, never by an implied
/// `latest`. Parsing accepts the text with or without `oci://`; displaying
/// always writes `oci://`, and parses back to an equal reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    version: Version,
}

/// The version part of a [`Reference`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Version {
    /// A tag, which the registry may move to another manifest.
    Tag(String),
    /// A manifest digest (`sha256:HEX`), which names exactly one manifest.
    Digest(String),
}

impl Reference {
    /// The registry, `HOST` or `HOST:PORT`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag or digest.
    pub fn version(&self) -> &Version {
        &self.version
    }

    /// The tag, if the reference names one.
    pub fn tag(&self) -> Option<&str> {
        match &self.version {
            Version::Tag(tag) => Some(tag),
            Version::Digest(_) => None,
        }
    }

    /// The manifest digest, if the reference names one.
    pub fn digest(&self) -> Option<&str> {
        match &self.version {
            Version::Tag(_) => None,
            Version::Digest(digest) => Some(digest),
        }
    }

    /// The same repository at a manifest digest: what a poller records once
    /// it has resolved a tag, so the next pull fetches exactly that manifest.
    pub fn with_digest(&self, digest: &str) -> Result<Self, OciError> {
        check_digest(digest).map_err(|reason| self.invalid(reason))?;
        Ok(self.at(Version::Digest(digest.to_owned())))
    }

    /// The same repository at a tag.
    pub fn with_tag(&self, tag: &str) -> Result<Self, OciError> {
        check_tag(tag).map_err(|reason| self.invalid(reason))?;
        Ok(self.at(Version::Tag(tag.to_owned())))
    }

    fn at(&self, version: Version) -> Self {
        Self {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            version,
        }
    }

    fn invalid(&self, reason: String) -> OciError {
        OciError::InvalidReference {
            input: self.to_string(),
            reason,
        }
    }

    /// The same reference in oci-client's terms.
    pub(crate) fn to_client(&self) -> oci_client::Reference {
        let (registry, repository) = (self.registry.clone(), self.repository.clone());
        match &self.version {
            Version::Tag(tag) => oci_client::Reference::with_tag(registry, repository, tag.clone()),
            Version::Digest(digest) => {
                oci_client::Reference::with_digest(registry, repository, digest.clone())
            }
        }
    }
}

impl FromStr for Reference {
    type Err = OciError;

    fn from_str(input: &str) -> Result<Self, OciError> {
        let shown = without_credentials(input);
        if shown != input {
            // Whatever else is wrong, the message must not repeat a secret.
            return Err(OciError::InvalidReference {
                input: shown,
                reason: "credentials do not belong in a reference; set CEDAR_EDGE_REGISTRY_USERNAME and CEDAR_EDGE_REGISTRY_PASSWORD".to_owned(),
            });
        }
        parse(input).map_err(|reason| OciError::InvalidReference {
            input: shown,
            reason,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        match &self.version {
            Version::Tag(tag) => write!(f, ":{tag}"),
            Version::Digest(digest) => write!(f, "@{digest}"),
        }
    }
}

const SHAPE: &str =
    "write `oci://HOST[:PORT]/REPOSITORY:TAG` or `oci://HOST[:PORT]/REPOSITORY@sha256:HEX`";

fn parse(input: &str) -> Result<Reference, String> {
    let rest = match input.split_once("://") {
        Some(("oci", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!("`{scheme}://` is not an OCI scheme; {SHAPE}"));
        }
        None => input,
    };
    let Some((registry, path)) = rest.split_once('/') else {
        return Err(format!("no repository after the registry host; {SHAPE}"));
    };
    check_registry(registry)?;
    let (repository, version) = if let Some((repository, digest)) = path.split_once('@') {
        if repository.contains(':') {
            return Err("give a tag or a digest, not both".to_owned());
        }
        check_digest(digest)?;
        (repository, Version::Digest(digest.to_owned()))
    } else if let Some((repository, tag)) = path.rsplit_once(':') {
        check_tag(tag)?;
        (repository, Version::Tag(tag.to_owned()))
    } else {
        return Err(format!(
            "no tag or digest: a bundle is named explicitly (there is no default `latest`); {SHAPE}"
        ));
    };
    check_repository(repository)?;
    Ok(Reference {
        registry: registry.to_owned(),
        repository: repository.to_owned(),
        version,
    })
}

fn check_registry(registry: &str) -> Result<(), String> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    let host_ok = !host.is_empty()
        && !host.starts_with(['.', '-'])
        && !host.ends_with(['.', '-'])
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    if !host_ok {
        return Err(format!(
            "`{registry}` is not a registry host: letters, digits, `.` and `-`, then an optional `:PORT`; {SHAPE}"
        ));
    }
    if let Some(port) = port
        && (!port.chars().all(|c| c.is_ascii_digit()) || !matches!(port.parse::<u16>(), Ok(1..)))
    {
        return Err(format!("`{port}` is not a port number"));
    }
    Ok(())
}

/// Repository components as the distribution specification allows them:
/// lowercase letters and digits, separated by one `.`, one or two `_`, or
/// any number of `-`.
fn check_repository(repository: &str) -> Result<(), String> {
    let component_ok = |component: &str| {
        let starts_and_ends = component
            .starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && component.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
        starts_and_ends
            && component
                .split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                .all(|separator| {
                    matches!(separator, "" | "." | "_" | "__")
                        || separator.chars().all(|c| c == '-')
                })
    };
    if repository.is_empty() {
        return Err(format!("the repository is empty; {SHAPE}"));
    }
    if !repository.split('/').all(component_ok) {
        return Err(format!(
            "`{repository}` is not a repository name: lowercase letters and digits, with `.`, `_`, `__` or `-` between them and `/` between parts"
        ));
    }
    if repository.len() > 255 {
        return Err("the repository name is longer than 255 characters".to_owned());
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), String> {
    let ok = (1..=128).contains(&tag.len())
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{tag}` is not a tag: 1 to 128 letters, digits, `_`, `.` or `-`, not starting with `.` or `-`"
        ))
    }
}

/// Only sha256: it is what bundle ids use, and one algorithm keeps a
/// hostile registry from choosing a weaker one.
pub(crate) fn check_digest(digest: &str) -> Result<(), String> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, 'a'..='f'))
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{digest}` is not a digest: `sha256:` and 64 lowercase hex digits"
        ))
    }
}

/// A reference as typed, with anything before an `@` in its host part (a
/// mistaken `user:token@`) hidden, so that no error repeats a secret.
fn without_credentials(input: &str) -> String {
    let (scheme, rest) = input.split_once("://").unwrap_or(("", input));
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest.get(..host_end).and_then(|host| host.rfind('@')) {
        Some(at) => {
            let shown = format!("***{}", rest.get(at..).unwrap_or_default());
            if scheme.is_empty() {
                shown
            } else {
                format!("{scheme}://{shown}")
            }
        }
        None => input.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn reason(input: &str) -> String {
        match input.parse::<Reference>() {
            Ok(reference) => panic!("`{input}` parsed as {reference:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn parses_tags_and_digests_with_and_without_the_scheme() {
        let tagged: Reference = "oci://registry.example:5000/team/policies:v1.2"
            .parse()
            .unwrap();
        assert_eq!(tagged.registry(), "registry.example:5000");
        assert_eq!(tagged.repository(), "team/policies");
        assert_eq!(tagged.tag(), Some("v1.2"));
        assert_eq!(tagged.digest(), None);

        let pinned: Reference = format!("127.0.0.1/a/b-c__d.e@sha256:{HEX}")
            .parse()
            .unwrap();
        assert_eq!(pinned.registry(), "127.0.0.1");
        assert_eq!(pinned.repository(), "a/b-c__d.e");
        assert_eq!(pinned.digest(), Some(format!("sha256:{HEX}").as_str()));
        assert_eq!(pinned.tag(), None);
    }

    #[test]
    fn a_mistyped_credential_is_never_repeated() {
        let err = "oci://deploy:t0ken@registry.example.com/p/b:main"
            .parse::<Reference>()
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains("t0ken") && err.contains("***@registry.example.com"),
            "{err}"
        );
    }

    #[test]
    fn display_round_trips() {
        for input in [
            "oci://localhost:5000/policies:main".to_owned(),
            "registry.example/x/y/z:v-1_2.3".to_owned(),
            format!("oci://127.0.0.1:80/p@sha256:{HEX}"),
        ] {
            let reference: Reference = input.parse().unwrap();
            let shown = reference.to_string();
            assert!(shown.starts_with("oci://"), "{shown}");
            assert_eq!(shown.parse::<Reference>().unwrap(), reference);
            assert!(shown.ends_with(input.trim_start_matches("oci://")));
        }
    }

    #[test]
    fn with_digest_and_with_tag_keep_the_repository() {
        let tagged: Reference = "oci://h:1/r:t".parse().unwrap();
        let pinned = tagged.with_digest(&format!("sha256:{HEX}")).unwrap();
        assert_eq!(pinned.to_string(), format!("oci://h:1/r@sha256:{HEX}"));
        assert_eq!(pinned.with_tag("u").unwrap().to_string(), "oci://h:1/r:u");
        assert!(tagged.with_digest("sha256:00").is_err());
        assert!(tagged.with_tag("-x").is_err());
    }

    #[test]
    fn refuses_bad_references_saying_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("oci://registry.example/policies", "no tag or digest"),
            ("oci://registry.example/policies", "no default `latest`"),
            ("policies:v1", "no repository after the registry host"),
            (
                "https://registry.example/p:v1",
                "`https://` is not an OCI scheme",
            ),
            ("oci:///p:v1", "is not a registry host"),
            ("oci://bad_host/p:v1", "`bad_host` is not a registry host"),
            ("oci://h:99999/p:v1", "`99999` is not a port number"),
            ("oci://h:0/p:v1", "`0` is not a port number"),
            ("oci://h/Policies:v1", "`Policies` is not a repository name"),
            ("oci://h/a//b:v1", "is not a repository name"),
            ("oci://h/a/:v1", "is not a repository name"),
            ("oci://h/a..b:v1", "is not a repository name"),
            ("oci://h/:v1", "the repository is empty"),
            ("oci://h/p:", "`` is not a tag"),
            ("oci://h/p:.v1", "`.v1` is not a tag"),
            ("oci://h/p:v/1", "`v/1` is not a tag"),
            ("oci://h/p@sha256:abc", "`sha256:abc` is not a digest"),
            ("oci://h/p@md5:abc", "`md5:abc` is not a digest"),
            ("oci://h/p:v1@sha256:abc", "not both"),
        ];
        for (input, expected) in cases {
            let message = reason(input);
            assert!(
                message.contains(expected),
                "`{input}`: `{message}` lacks `{expected}`"
            );
            assert!(
                message.contains(input),
                "`{message}` does not name `{input}`"
            );
        }
        let upper = format!("oci://h/p@sha256:{}", HEX.to_uppercase());
        assert!(reason(&upper).contains("is not a digest"));
        let long_tag = format!("oci://h/p:{}", "t".repeat(129));
        assert!(reason(&long_tag).contains("is not a tag"));
    }
}
