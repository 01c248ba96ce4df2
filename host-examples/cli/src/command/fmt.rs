//! `cedar-edge fmt`: Cedar files in Cedar's own layout.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use cedar_edge_cli::exit_codes;
use cedar_edge_cli::format::format_bundle;
use cedar_edge_cli::report::print_bundle_diagnostics;
use clap::Args;

use super::{BundleOptions, read_bundle};

/// Arguments of `cedar-edge fmt`.
#[derive(Debug, Args)]
pub struct FmtArgs {
    /// The bundle directory.
    bundle: PathBuf,
    /// Write nothing; list the files that would change and fail if any would.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    options: BundleOptions,
}

/// Runs the command and returns its exit code.
pub fn run(args: &FmtArgs) -> u8 {
    let source = match read_bundle(&args.bundle, &args.options) {
        Ok(source) => source,
        Err(code) => return code,
    };
    // The formatter parses too, and would overflow its stack just the same.
    if let Err(err) = source.check_nesting() {
        print_bundle_diagnostics(&args.bundle, &source, &err.diagnostics);
        return exit_codes::BUNDLE;
    }
    let (formatted, errors) = format_bundle(&args.bundle, &source);
    for error in &errors {
        eprintln!(
            "{:?}",
            miette::Report::msg(format!("`{}`: {}", error.path.display(), error.message))
        );
    }
    let changed: Vec<_> = formatted.iter().filter(|file| file.changed).collect();
    let mut unwritten = 0;
    if args.check {
        for file in &changed {
            println!("would reformat {}", file.path.display());
        }
    } else {
        for file in &changed {
            match replace_file(&args.bundle, &file.path, &file.text) {
                Ok(()) => println!("formatted {}", file.path.display()),
                Err(message) => {
                    eprintln!("error: cannot write `{}`: {message}", file.path.display());
                    unwritten += 1;
                }
            }
        }
    }
    if !errors.is_empty() {
        exit_codes::BUNDLE
    } else if unwritten > 0 || (args.check && !changed.is_empty()) {
        exit_codes::FAILED
    } else {
        exit_codes::OK
    }
}

/// How many names a temporary file tries before giving up.
const TEMP_NAME_ATTEMPTS: u32 = 64;

/// Replaces a bundle file with new text, atomically, and never through a
/// symbolic link: the file must be a regular file inside the bundle. The
/// text goes to a new file made beside it (`create_new`: a name planted in
/// advance is never opened), which is then renamed over it, with the old
/// file's permissions.
fn replace_file(bundle: &Path, path: &Path, text: &str) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|err| err.to_string())?;
    if meta.file_type().is_symlink() {
        return Err("it is a symbolic link, and `fmt` never writes through one".to_owned());
    }
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err("not a file path".to_owned());
    };
    let root = bundle.canonicalize().map_err(|err| err.to_string())?;
    let real_dir = dir.canonicalize().map_err(|err| err.to_string())?;
    if !real_dir.starts_with(&root) {
        return Err("it is outside the bundle directory".to_owned());
    }
    let (temp_path, mut temp) = create_temp_beside(&real_dir, name)?;
    let written = temp
        .write_all(text.as_bytes())
        .and_then(|()| temp.set_permissions(meta.permissions()))
        .and_then(|()| temp.sync_all())
        .and_then(|()| std::fs::rename(&temp_path, real_dir.join(name)));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temp_path);
        return Err(err.to_string());
    }
    Ok(())
}

/// A new, empty file in `dir`, at a hidden name no one made first.
fn create_temp_beside(
    dir: &Path,
    name: &std::ffi::OsStr,
) -> Result<(PathBuf, std::fs::File), String> {
    for attempt in 0..TEMP_NAME_ATTEMPTS {
        // Hidden, so that a bundle read never picks it up.
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".fmt-{}-{attempt}.tmp", std::process::id()));
        let candidate = dir.join(temp_name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(file) => return Ok((candidate, file)),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(format!("cannot create a temporary file: {err}")),
        }
    }
    Err(format!(
        "cannot create a temporary file in `{}`: every name tried exists",
        dir.display()
    ))
}
