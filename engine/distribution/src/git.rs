//! Git remotes as bundle sources.
//!
//! A gateway follows a branch or tag of a repository on a self-hosted
//! server and loads one folder of it at a commit:
//! [`GitSource::latest_commit`] asks the remote cheaply (`git ls-remote`),
//! and [`GitSource::checkout`] fetches that commit into a bare cache
//! repository, checks that it is on the ref, and writes only the folder's
//! files out. The caller reads them with
//! `cedar_edge_core::BundleSource::from_dir`.
//!
//! This drives the `git` command-line program rather than linking a Git
//! library: `git` is on every CI image and gateway host, speaks every
//! transport and credential setup a self-hosted server expects, and keeps
//! the parsing of a remote's pack data out of the gateway's process. Each
//! call gets its arguments as separate argv entries (no shell), an
//! environment without the user's or the system's Git configuration, and a
//! deadline.
//!
//! The calls block; an async host runs them on a blocking thread. A cache
//! folder belongs to one source in one process at a time.

mod command;
mod export;
mod spec;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use spec::{GitRef, GitSpecError, SpecPart};

use command::{Output, RunError};
use spec::redact_url;

/// How long one `git` call may take unless [`GitSource::with_timeout`]
/// says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How many commits back from the ref's tip a requested commit is looked
/// for unless [`GitSource::with_fetch_depth`] says otherwise.
pub const DEFAULT_FETCH_DEPTH: u32 = 100;
/// The largest archive of a bundle folder accepted unless
/// [`GitSource::with_max_export_bytes`] says otherwise.
pub const DEFAULT_MAX_EXPORT_BYTES: usize = 64 * 1024 * 1024;

/// The most `git` may print where only a line or two is expected.
const SMALL_OUTPUT: usize = 1024 * 1024;
/// The longest piece of git's stderr quoted in an error.
const QUOTED_STDERR: usize = 600;

/// Distinguishes the export folders of one process.
static NEXT_EXPORT: AtomicU64 = AtomicU64::new(0);

/// A bundle folder in a Git repository, followed at a branch or tag.
///
/// Written `git+URL#REF[:SUBDIR]` (see [`GitSource::parse`]).
#[derive(Clone)]
pub struct GitSource {
    url: String,
    reference: GitRef,
    subdir: String,
    cache_dir: PathBuf,
    timeout: Duration,
    fetch_depth: u32,
    max_export_bytes: usize,
    allowed_signers: Option<PathBuf>,
}

/// One commit's bundle folder, written out under the cache folder. Dropping
/// it removes the files.
#[derive(Debug)]
pub struct Checkout {
    commit: String,
    dir: PathBuf,
    signer: Option<String>,
}

impl Checkout {
    /// The commit the files come from.
    pub fn commit(&self) -> &str {
        &self.commit
    }

    /// The folder holding the bundle folder's files, and nothing else.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Who signed the commit, when signatures are required.
    pub fn signer(&self) -> Option<&str> {
        self.signer.as_deref()
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Why a Git source could not be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GitError {
    /// The `git` program could not be run.
    #[error("cannot run `git`: {message}")]
    #[diagnostic(code(cedar_edge::git::spawn))]
    Spawn {
        /// Why.
        message: String,
    },
    /// The remote did not answer, or refused the repository.
    #[error("remote `{remote}` unreachable: {message}")]
    #[diagnostic(code(cedar_edge::git::unreachable))]
    Unreachable {
        /// The remote's URL, credentials hidden.
        remote: String,
        /// Git's stderr, trimmed.
        message: String,
    },
    /// The remote has no such branch or tag.
    #[error("ref `{reference}` not found on remote `{remote}`")]
    #[diagnostic(code(cedar_edge::git::ref_not_found))]
    RefNotFound {
        /// The remote's URL, credentials hidden.
        remote: String,
        /// The full ref name.
        reference: String,
    },
    /// A `git` call ran past its deadline and was killed.
    #[error("git {action} for remote `{remote}` timed out after {seconds} s")]
    #[diagnostic(code(cedar_edge::git::timeout))]
    Timeout {
        /// The remote's URL, credentials hidden.
        remote: String,
        /// The git subcommand.
        action: &'static str,
        /// The deadline.
        seconds: u64,
    },
    /// The commit asked for is not a full object id.
    #[error("commit `{commit}` is not a full hexadecimal commit id")]
    #[diagnostic(code(cedar_edge::git::commit_id))]
    InvalidCommit {
        /// The text given.
        commit: String,
    },
    /// The commit is not the ref's tip nor among its recent ancestors.
    #[error(
        "commit `{commit}` is not on ref `{reference}` of remote `{remote}` (looked {depth} commits back)"
    )]
    #[diagnostic(code(cedar_edge::git::not_on_ref))]
    NotOnRef {
        /// The remote's URL, credentials hidden.
        remote: String,
        /// The full ref name.
        reference: String,
        /// The commit asked for.
        commit: String,
        /// How far back from the tip it was looked for.
        depth: u32,
    },
    /// The bundle folder is not a folder at that commit.
    #[error("folder `{subdir}` does not exist at commit `{commit}` of remote `{remote}`")]
    #[diagnostic(code(cedar_edge::git::subdir_missing))]
    SubdirMissing {
        /// The remote's URL, credentials hidden.
        remote: String,
        /// The commit.
        commit: String,
        /// The folder, relative to the repository's root.
        subdir: String,
    },
    /// The commit is unsigned or not signed by an allowed signer.
    #[error("commit `{commit}` of remote `{remote}` is not signed by an allowed signer: {message}")]
    #[diagnostic(code(cedar_edge::git::signature))]
    Unsigned {
        /// The remote's URL, credentials hidden.
        remote: String,
        /// The commit.
        commit: String,
        /// What `git verify-commit` said.
        message: String,
    },
    /// A file of the bundle folder could not be written out.
    #[error("cannot export `{path}` from commit `{commit}`: {reason}")]
    #[diagnostic(code(cedar_edge::git::export))]
    Export {
        /// The commit.
        commit: String,
        /// The file, relative to the bundle folder.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another `git` call failed.
    #[error("git {action} failed for ref `{reference}` of remote `{remote}`: {message}")]
    #[diagnostic(code(cedar_edge::git::failed))]
    Git {
        /// The remote's URL, credentials hidden.
        remote: String,
        /// The full ref name.
        reference: String,
        /// The git subcommand.
        action: &'static str,
        /// Git's stderr, trimmed.
        message: String,
    },
    /// The cache folder could not be prepared.
    #[error("cannot use cache folder `{}`: {message}", path.display())]
    #[diagnostic(code(cedar_edge::git::cache))]
    Cache {
        /// The folder or file at fault.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

impl GitSource {
    /// A source from its parts, each checked as [`parse`](Self::parse)
    /// checks them. An empty `subdir` is the repository's root.
    pub fn new(
        url: &str,
        reference: GitRef,
        subdir: &str,
        cache_dir: impl Into<PathBuf>,
    ) -> Result<Self, GitSpecError> {
        spec::validate_url(url)?;
        reference.validate()?;
        let subdir = spec::normalize_subdir(subdir)?;
        Ok(Self {
            url: url.to_owned(),
            reference,
            subdir,
            cache_dir: cache_dir.into(),
            timeout: DEFAULT_TIMEOUT,
            fetch_depth: DEFAULT_FETCH_DEPTH,
            max_export_bytes: DEFAULT_MAX_EXPORT_BYTES,
            allowed_signers: None,
        })
    }

    /// Reads the gateway's configuration form `git+URL#REF[:SUBDIR]`:
    ///
    /// - `URL` is an `http`, `https`, `git`, `ssh` or `file` URL; it ends at
    ///   the first `#`.
    /// - `REF` is `NAME` or `branch=NAME` or `refs/heads/NAME` for a branch,
    ///   `tag=NAME` or `refs/tags/NAME` for a tag; it ends at the first `:`
    ///   (ref names cannot hold one).
    /// - `SUBDIR` is the bundle folder, relative to the repository's root,
    ///   without `.` or `..`; left out with its `:`, it is the root.
    ///
    /// For example `git+http://127.0.0.1:9418/policies.git#main:policies/airflow-gitlab`
    /// or `git+git://git.example/policies.git#refs/tags/v3:bundle`.
    pub fn parse(spec: &str, cache_dir: impl Into<PathBuf>) -> Result<Self, GitSpecError> {
        let (url, reference, subdir) = spec::split(spec)?;
        Self::new(url, GitRef::parse(reference)?, subdir, cache_dir)
    }

    /// Sets the deadline of each `git` call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how many commits back from the ref's tip
    /// [`checkout`](Self::checkout) looks for the commit asked for.
    pub fn with_fetch_depth(mut self, depth: u32) -> Self {
        self.fetch_depth = depth.max(1);
        self
    }

    /// Sets the largest archive of the bundle folder accepted.
    pub fn with_max_export_bytes(mut self, bytes: usize) -> Self {
        self.max_export_bytes = bytes;
        self
    }

    /// Makes [`checkout`](Self::checkout) refuse a commit that is not signed
    /// with an SSH key listed in `allowed_signers` (the format of
    /// `ssh-keygen`'s allowed signers file, as `gpg.ssh.allowedSignersFile`).
    pub fn require_signed_commits(mut self, allowed_signers: impl Into<PathBuf>) -> Self {
        self.allowed_signers = Some(allowed_signers.into());
        self
    }

    /// The remote's URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The branch or tag followed.
    pub fn reference(&self) -> &GitRef {
        &self.reference
    }

    /// The bundle folder, relative to the repository's root (empty for the
    /// root).
    pub fn subdir(&self) -> &str {
        &self.subdir
    }

    /// The folder holding the cache repository and the exported files.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The commit the remote's ref points to now, without fetching anything
    /// (`git ls-remote`). An annotated tag gives the commit it tags.
    pub fn latest_commit(&self) -> Result<String, GitError> {
        let full = self.reference.full_name();
        let output = self.git(
            None,
            "ls-remote",
            // The peeled name must be asked for too: a pattern matches
            // whole ref names only.
            &[
                os("ls-remote"),
                os("--"),
                os(&self.url),
                os(&full),
                os(format!("{full}^{{}}")),
            ],
            SMALL_OUTPUT,
        )?;
        if !output.success {
            return Err(self.remote_failure(&output));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let peeled_name = format!("{full}^{{}}");
        let (mut direct, mut peeled) = (None, None);
        for line in stdout.lines() {
            match line.split_once('\t') {
                Some((id, name)) if name == full => direct = Some(id),
                Some((id, name)) if name == peeled_name => peeled = Some(id),
                _ => {}
            }
        }
        let Some(id) = peeled.or(direct) else {
            return Err(GitError::RefNotFound {
                remote: self.remote(),
                reference: full,
            });
        };
        parse_commit(id).map_err(|_| self.failure("ls-remote", format!("unexpected output `{id}`")))
    }

    /// Fetches `commit` (a full commit id, as
    /// [`latest_commit`](Self::latest_commit) gives) into the cache
    /// repository and writes the bundle folder's files at that commit into
    /// a new folder under the cache folder. The commit must be the ref's tip
    /// or one of its ancestors within the [fetch
    /// depth](Self::with_fetch_depth): a commit of another branch, or one a
    /// force-push removed, is refused.
    ///
    /// Symbolic links and other special entries are refused, not written.
    /// Export folders of earlier runs of the process are removed.
    pub fn checkout(&self, commit: &str) -> Result<Checkout, GitError> {
        let commit = parse_commit(commit)?;
        self.init_cache()?;
        self.fetch(&commit)?;
        let signer = match &self.allowed_signers {
            Some(allowed) => Some(self.verify_signature(&commit, allowed)?),
            None => None,
        };

        // `COMMIT:PATH` names the folder's tree: no pathspec is involved,
        // and the archive's paths are relative to the folder.
        let tree = format!("{commit}:{}", self.subdir);
        let kind = self.git_in_repo("cat-file", &[os("cat-file"), os("-t"), os(&tree)], 64)?;
        if !kind.success || String::from_utf8_lossy(&kind.stdout).trim() != "tree" {
            return Err(GitError::SubdirMissing {
                remote: self.remote(),
                commit,
                subdir: self.subdir.clone(),
            });
        }
        let archive = self.git_in_repo(
            "archive",
            &[os("archive"), os("--format=tar"), os(&tree)],
            self.max_export_bytes,
        )?;
        if !archive.success {
            return Err(self.failure("archive", quote(&archive.stderr)));
        }

        let checkout = Checkout {
            dir: self.new_export_dir(&commit)?,
            commit,
            signer,
        };
        // On an error the checkout is dropped, and its folder with it.
        export::unpack(&archive.stdout, &checkout.dir).map_err(|err| GitError::Export {
            commit: checkout.commit.clone(),
            path: err.path,
            reason: err.reason,
        })?;
        Ok(checkout)
    }

    /// Creates the bare cache repository on first use, without the
    /// installation's template hooks.
    fn init_cache(&self) -> Result<(), GitError> {
        let repo = self.repo();
        if repo.join("HEAD").is_file() {
            return Ok(());
        }
        fs::create_dir_all(&repo).map_err(|err| cache_error(&repo, &err))?;
        let output = self.git(
            None,
            "init",
            &[
                os("init"),
                os("--bare"),
                os("--quiet"),
                os("--template="),
                os("--"),
                repo.clone().into_os_string(),
            ],
            SMALL_OUTPUT,
        )?;
        if output.success {
            Ok(())
        } else {
            Err(cache_error(&repo, &quote(&output.stderr)))
        }
    }

    /// Fetches the ref's tip alone, which is nearly always the commit asked
    /// for; if it is not, fetches the ref's recent history as well.
    fn fetch(&self, commit: &str) -> Result<(), GitError> {
        let full = self.reference.full_name();
        let local = format!("refs/cedar-edge/{}", full.trim_start_matches("refs/"));
        let refspec = format!("+{full}:{local}");
        let mut depths = vec![1];
        if self.fetch_depth > 1 {
            depths.push(self.fetch_depth);
        }
        for depth in depths {
            let output = self.git_in_repo(
                "fetch",
                &[
                    os("fetch"),
                    os("--quiet"),
                    os("--no-tags"),
                    os("--no-write-fetch-head"),
                    os(format!("--depth={depth}")),
                    os("--"),
                    os(&self.url),
                    os(&refspec),
                ],
                SMALL_OUTPUT,
            )?;
            if !output.success {
                return Err(self.remote_failure(&output));
            }
            // Exit 0: an ancestor (or the tip itself); 1: not one; 128: the
            // commit is not in the cache, so not within this depth either.
            let ancestry = self.git_in_repo(
                "merge-base",
                &[
                    os("merge-base"),
                    os("--is-ancestor"),
                    os(commit),
                    os(format!("{local}^{{commit}}")),
                ],
                SMALL_OUTPUT,
            )?;
            if ancestry.success {
                return Ok(());
            }
        }
        Err(GitError::NotOnRef {
            remote: self.remote(),
            reference: full,
            commit: commit.to_owned(),
            depth: self.fetch_depth,
        })
    }

    /// `git verify-commit` against the allowed signers file; gives the
    /// signer's principal.
    fn verify_signature(&self, commit: &str, allowed: &Path) -> Result<String, GitError> {
        let mut setting = OsString::from("gpg.ssh.allowedSignersFile=");
        setting.push(allowed);
        let output = self.git_in_repo(
            "verify-commit",
            &[os("-c"), setting, os("verify-commit"), os(commit)],
            SMALL_OUTPUT,
        )?;
        let unsigned = |message: String| GitError::Unsigned {
            remote: self.remote(),
            commit: commit.to_owned(),
            message,
        };
        if !output.success {
            let message = if output.stderr.is_empty() {
                "no signature".to_owned()
            } else {
                quote(&output.stderr)
            };
            return Err(unsigned(message));
        }
        // `Good "git" signature for PRINCIPAL with ED25519 key SHA256:…`
        output
            .stderr
            .lines()
            .find_map(|line| {
                let rest = line.split_once("signature for ")?.1;
                Some(rest.split_once(" with ")?.0.to_owned())
            })
            .ok_or_else(|| unsigned(format!("no signer named in `{}`", quote(&output.stderr))))
    }

    /// A new, empty export folder. Removes the export folders of other
    /// processes first: they are left over from an earlier run, since a
    /// cache folder belongs to one process.
    fn new_export_dir(&self, commit: &str) -> Result<PathBuf, GitError> {
        let exports = self.cache_dir.join("exports");
        fs::create_dir_all(&exports).map_err(|err| cache_error(&exports, &err))?;
        let own = format!("{}-", std::process::id());
        if let Ok(entries) = fs::read_dir(&exports) {
            for entry in entries.flatten() {
                if !entry.file_name().to_string_lossy().starts_with(&own) {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let serial = NEXT_EXPORT.fetch_add(1, Ordering::Relaxed);
        let short = commit.get(..12).unwrap_or(commit);
        let dir = exports.join(format!("{own}{serial}-{short}"));
        fs::create_dir(&dir).map_err(|err| cache_error(&dir, &err))?;
        Ok(dir)
    }

    /// Runs git in the cache repository.
    fn git_in_repo(
        &self,
        action: &'static str,
        args: &[OsString],
        stdout_cap: usize,
    ) -> Result<Output, GitError> {
        self.git(Some(&self.repo()), action, args, stdout_cap)
    }

    /// Runs git with the cache folder's empty `home` as its home.
    fn git(
        &self,
        repo: Option<&Path>,
        action: &'static str,
        args: &[OsString],
        stdout_cap: usize,
    ) -> Result<Output, GitError> {
        let home = self.cache_dir.join("home");
        fs::create_dir_all(&home).map_err(|err| cache_error(&home, &err))?;
        let mut all = Vec::with_capacity(args.len() + 1);
        if let Some(repo) = repo {
            let mut git_dir = OsString::from("--git-dir=");
            git_dir.push(repo);
            all.push(git_dir);
        }
        all.extend_from_slice(args);
        command::run(&home, &all, self.timeout, stdout_cap).map_err(|err| match err {
            RunError::Spawn(err) => GitError::Spawn {
                message: err.to_string(),
            },
            RunError::Timeout => GitError::Timeout {
                remote: self.remote(),
                action,
                seconds: self.timeout.as_secs(),
            },
            RunError::TooMuchOutput => {
                self.failure(action, format!("printed more than {stdout_cap} bytes"))
            }
        })
    }

    /// A failed `ls-remote` or `fetch`: the ref is missing, or the remote
    /// could not be reached or read.
    fn remote_failure(&self, output: &Output) -> GitError {
        if output.stderr.contains("couldn't find remote ref") {
            return GitError::RefNotFound {
                remote: self.remote(),
                reference: self.reference.full_name(),
            };
        }
        GitError::Unreachable {
            remote: self.remote(),
            message: self.hide_credentials(&quote(&output.stderr)),
        }
    }

    fn failure(&self, action: &'static str, message: String) -> GitError {
        GitError::Git {
            remote: self.remote(),
            reference: self.reference.full_name(),
            action,
            message: self.hide_credentials(&message),
        }
    }

    fn hide_credentials(&self, text: &str) -> String {
        text.replace(&self.url, &self.remote())
    }

    fn remote(&self) -> String {
        redact_url(&self.url)
    }

    fn repo(&self) -> PathBuf {
        self.cache_dir.join("repo.git")
    }
}

impl fmt::Display for GitSource {
    /// The written form, credentials hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "git+{}#{}", self.remote(), self.reference)?;
        if !self.subdir.is_empty() {
            write!(f, ":{}", self.subdir)?;
        }
        Ok(())
    }
}

impl fmt::Debug for GitSource {
    /// Like the written form: a URL's credentials stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &self.remote())
            .field("reference", &self.reference)
            .field("subdir", &self.subdir)
            .field("cache_dir", &self.cache_dir)
            .field("timeout", &self.timeout)
            .field("fetch_depth", &self.fetch_depth)
            .field("max_export_bytes", &self.max_export_bytes)
            .field("allowed_signers", &self.allowed_signers)
            .finish()
    }
}

/// A full commit id (SHA-1 or SHA-256), lowercased: never an option, a
/// ref name or a revision expression.
fn parse_commit(text: &str) -> Result<String, GitError> {
    let hex = text.len() == 40 || text.len() == 64;
    if hex && text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(GitError::InvalidCommit {
            commit: text.to_owned(),
        })
    }
}

/// Git's stderr on one line, cut to a readable length.
fn quote(stderr: &str) -> String {
    let joined = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match joined.char_indices().nth(QUOTED_STDERR) {
        Some((cut, _)) => format!("{}…", joined.get(..cut).unwrap_or_default()),
        None => joined,
    }
}

fn cache_error(path: &Path, err: &dyn fmt::Display) -> GitError {
    GitError::Cache {
        path: path.to_owned(),
        message: err.to_string(),
    }
}

fn os(text: impl AsRef<OsStr>) -> OsString {
    text.as_ref().to_owned()
}
