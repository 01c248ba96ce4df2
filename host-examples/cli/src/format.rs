//! `fmt`: Cedar files in the layout of Cedar's own formatter, which this
//! module calls rather than imitates.

use std::path::{Path, PathBuf};

use cedar_edge_core::BundleSource;
use cedar_policy_formatter::{Config, policies_str_to_pretty};

/// The layout `cedar format` uses by default.
pub const LINE_WIDTH: usize = 80;
/// The indent `cedar format` uses by default.
pub const INDENT_WIDTH: isize = 2;

/// One policy file and its formatted text.
#[derive(Debug, Clone)]
pub struct Formatted {
    /// The file on disk.
    pub path: PathBuf,
    /// Whether formatting changes it.
    pub changed: bool,
    /// The formatted text.
    pub text: String,
}

/// A policy file that Cedar's formatter refused.
#[derive(Debug, Clone)]
pub struct FormatError {
    /// The file on disk.
    pub path: PathBuf,
    /// Why.
    pub message: String,
}

/// Formats every policy file of a bundle, without writing anything.
pub fn format_bundle(dir: &Path, source: &BundleSource) -> (Vec<Formatted>, Vec<FormatError>) {
    let config = Config {
        line_width: LINE_WIDTH,
        indent_width: INDENT_WIDTH,
    };
    let mut formatted = Vec::new();
    let mut errors = Vec::new();
    for file in &source.policies {
        let path = dir.join(&file.path);
        match policies_str_to_pretty(&file.contents, &config) {
            Ok(text) => formatted.push(Formatted {
                changed: text != file.contents,
                path,
                text,
            }),
            Err(err) => errors.push(FormatError {
                path,
                message: err
                    .chain()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(": "),
            }),
        }
    }
    (formatted, errors)
}
