//! Bundle problems, located by file, line and column.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One problem in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The bundle file at fault, relative to the bundle directory.
    pub file: String,
    /// 1-based line, or 0 when the problem has no position.
    pub line: u32,
    /// 1-based column, or 0 when the problem has no position.
    pub column: u32,
    /// Byte offset of the faulty span.
    pub offset: u32,
    /// Byte length of the faulty span, 0 when unknown.
    pub length: u32,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when known.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A problem with a whole file rather than a place in it.
    pub fn in_file(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: 0,
            column: 0,
            offset: 0,
            length: 0,
            message: message.into(),
            help: None,
        }
    }

    /// Converts one of Cedar's errors, placing its first label in `text`.
    pub fn from_cedar(file: &str, text: &str, error: &dyn miette::Diagnostic) -> Self {
        let mut diagnostic = Self::in_file(file, full_message(error));
        diagnostic.help = error.help().map(|help| help.to_string());
        if let Some(label) = error.labels().and_then(|mut labels| labels.next()) {
            diagnostic.place(text, label.offset(), label.len());
        }
        diagnostic
    }

    /// Converts a Cedar error and every error related to it.
    pub(crate) fn all_from_cedar(
        file: &str,
        text: &str,
        error: &dyn miette::Diagnostic,
    ) -> Vec<Self> {
        let mut all = vec![Self::from_cedar(file, text, error)];
        if let Some(related) = error.related() {
            all.extend(related.map(|inner| Self::from_cedar(file, text, inner)));
        }
        all
    }

    /// Sets the span and works out its line and column in `text`.
    pub fn place(&mut self, text: &str, offset: usize, length: usize) {
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
        self.line = saturating_u32(before.matches('\n').count() + 1);
        self.column = saturating_u32(
            before
                .get(line_start..)
                .map_or(0, |line| line.chars().count())
                + 1,
        );
        self.offset = saturating_u32(offset);
        self.length = saturating_u32(length);
    }
}

/// The error's message followed by its causes: Cedar often puts the detail
/// that names the culprit in a cause.
pub(crate) fn full_message(error: &dyn miette::Diagnostic) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = inner.source();
    }
    if let Some(inner) = error.diagnostic_source() {
        let text = inner.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )?;
        } else {
            write!(f, "{}: {}", self.file, self.message)?;
        }
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("cedar_edge::bundle::problem"))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|help| Box::new(help) as Box<dyn fmt::Display>)
    }
}

impl miette::Diagnostic for crate::bundle::LoadError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("cedar_edge::bundle::invalid"))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.diagnostics
                .iter()
                .map(|diagnostic| diagnostic as &dyn miette::Diagnostic),
        ))
    }
}

/// One bundle problem together with the text of the file it points into,
/// so that a renderer can show the lines around it.
#[derive(Debug)]
pub struct SourcedProblem {
    problem: Diagnostic,
    /// The file as the user knows it (with the bundle directory), and its text.
    source: Option<miette::NamedSource<String>>,
    severity: miette::Severity,
    code: String,
}

impl SourcedProblem {
    /// Pairs `problem` with its file from `bundle`; `display_root` is put in
    /// front of the bundle-relative path so the name is one the user can open.
    pub fn new(
        problem: &Diagnostic,
        bundle: &crate::bundle::BundleSource,
        display_root: &std::path::Path,
    ) -> Self {
        let name = display_root.join(&problem.file).display().to_string();
        let source = bundle
            .files()
            .find(|file| file.path == problem.file)
            .map(|file| miette::NamedSource::new(name, file.contents.clone()));
        Self {
            problem: problem.clone(),
            source,
            severity: miette::Severity::Error,
            code: "cedar_edge::bundle::problem".to_owned(),
        }
    }

    /// Reports the problem at another severity, under another code (lints).
    pub fn with_kind(mut self, severity: miette::Severity, code: &str) -> Self {
        self.severity = severity;
        self.code = code.to_owned();
        self
    }

    /// The problem itself.
    pub fn problem(&self) -> &Diagnostic {
        &self.problem
    }
}

impl fmt::Display for SourcedProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.problem.message)
    }
}

impl std::error::Error for SourcedProblem {}

impl miette::Diagnostic for SourcedProblem {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        match (&self.problem.help, &self.source) {
            (Some(help), _) => Some(Box::new(help)),
            // Without a position the file's name must be said in words.
            (None, _) if self.problem.line == 0 => Some(Box::new(format!(
                "in `{}`",
                self.source
                    .as_ref()
                    .map_or(self.problem.file.as_str(), |source| source.name())
            ))),
            (None, _) => None,
        }
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        match &self.source {
            Some(source) if self.problem.line > 0 => Some(source as &dyn miette::SourceCode),
            _ => None,
        }
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        if self.problem.line == 0 || self.source.is_none() {
            return None;
        }
        let start = self.problem.offset as usize;
        let length = (self.problem.length as usize).max(1);
        Some(Box::new(std::iter::once(miette::LabeledSpan::at(
            start..start + length,
            "here",
        ))))
    }
}
