//! Reading a bundle's test files into runnable cases, with every problem
//! reported against its file (and line, where the parser knows it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_edge_core::{
    BundleDir, BundleReadError, ContextInput, DEFAULT_MAX_FILE_BYTES, EntityUid, Request,
};

use super::spec::{
    CaseSpec, ContextSpec, Defaults, EntitySpec, ErrorSpec, Fixtures, MatrixCell, MatrixSpec,
    Outcome, ReasonsSpec, RequestSpec, SuiteFile, UidSpec,
};
use crate::entities::EntityJson;

/// The folder of a bundle that holds its test files.
pub const TESTS_DIR: &str = "tests";
/// Files with this stem hold fixtures shared by every test file.
const SHARED_FIXTURES_STEM: &str = "fixtures";
/// How deep fixtures may refer to fixtures; deeper means a cycle.
const MAX_FIXTURE_DEPTH: usize = 16;

/// One runnable case.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// The test file, relative to the bundle.
    pub file: String,
    /// The suite's title.
    pub suite: String,
    /// The case's name; matrix cells are `matrix: principal / action / resource`.
    pub name: String,
    /// The request to decide.
    pub request: Request,
    /// The expected decision.
    pub expect: Outcome,
    /// The expected determining policies, if checked.
    pub reasons: Option<ReasonsSpec>,
    /// The expected errors, if checked.
    pub errors: Option<Vec<ErrorSpec>>,
}

/// A test file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteError {
    /// The file, relative to the bundle.
    pub file: String,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// The 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong, naming the case or field.
    pub message: String,
}

impl fmt::Display for SuiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Reads every test file under `BUNDLE/tests`, each at most
/// [`DEFAULT_MAX_FILE_BYTES`] long. A bundle without tests has an empty
/// suite.
pub fn load_suites(bundle_dir: &Path) -> Result<Vec<TestCase>, Vec<SuiteError>> {
    load_suites_capped(bundle_dir, DEFAULT_MAX_FILE_BYTES)
}

/// [`load_suites`] with another cap on each file's size. Test files are read
/// as bundle files are: never from outside the bundle directory, never
/// through a link to a directory (see [`BundleDir`]).
pub fn load_suites_capped(
    bundle_dir: &Path,
    max_file_bytes: u64,
) -> Result<Vec<TestCase>, Vec<SuiteError>> {
    let unreadable = |err: BundleReadError| {
        let file = err
            .path
            .strip_prefix(bundle_dir)
            .unwrap_or(&err.path)
            .to_string_lossy()
            .replace('\\', "/");
        SuiteError::at(&file, err.message)
    };
    let dir = BundleDir::open(bundle_dir, max_file_bytes).map_err(|err| vec![unreadable(err)])?;
    let relatives: Vec<String> = dir
        .files(TESTS_DIR, &[])
        .map_err(|err| vec![unreadable(err)])?
        .into_iter()
        .filter(|relative| {
            matches!(
                Path::new(relative).extension().and_then(|ext| ext.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();

    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for relative in relatives {
        let file = dir
            .read(&relative)
            .map_err(unreadable)
            .and_then(|text| parse_file(&text, &relative));
        match file {
            Ok(file) => parsed.push((relative.clone(), PathBuf::from(&relative), file)),
            Err(err) => errors.push(err),
        }
    }

    // Shared fixtures first, so every file sees them.
    let mut shared = Fixtures::default();
    for (relative, path, file) in &mut parsed {
        if is_shared_fixtures(path) {
            let taken = std::mem::take(&mut file.fixtures);
            merge_fixtures(&mut shared, taken, relative, &mut errors);
        }
    }

    let mut cases = Vec::new();
    for (relative, path, file) in parsed {
        let is_fixture_file = is_shared_fixtures(&path);
        if is_fixture_file && !(file.cases.is_empty() && file.matrices.is_empty()) {
            errors.push(SuiteError::at(
                &relative,
                "a shared fixtures file holds fixtures only, not cases or matrices",
            ));
            continue;
        }
        let suite = file.name.clone().unwrap_or_else(|| relative.clone());
        let mut fixtures = Fixtures::default();
        merge_fixtures(&mut fixtures, file.fixtures, &relative, &mut errors);
        let scope = Scope {
            file: &relative,
            suite: &suite,
            local: &fixtures,
            shared: &shared,
            defaults: &file.defaults,
        };
        let mut names = BTreeSet::new();
        for case in &file.cases {
            match scope.case(case) {
                Ok(built) => push_unique(&mut names, built, &mut cases, &mut errors, &relative),
                Err(message) => errors.push(SuiteError::at(
                    &relative,
                    format!("case `{}`: {message}", case.name),
                )),
            }
        }
        for matrix in &file.matrices {
            match scope.matrix(matrix) {
                Ok(built) => {
                    for case in built {
                        push_unique(&mut names, case, &mut cases, &mut errors, &relative);
                    }
                }
                Err(message) => errors.push(SuiteError::at(
                    &relative,
                    format!("matrix `{}`: {message}", matrix.name),
                )),
            }
        }
    }
    if errors.is_empty() {
        Ok(cases)
    } else {
        Err(errors)
    }
}

impl SuiteError {
    fn at(file: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

fn push_unique(
    names: &mut BTreeSet<String>,
    case: TestCase,
    cases: &mut Vec<TestCase>,
    errors: &mut Vec<SuiteError>,
    file: &str,
) {
    if names.insert(case.name.clone()) {
        cases.push(case);
    } else {
        errors.push(SuiteError::at(
            file,
            format!("the case name `{}` is used twice", case.name),
        ));
    }
}

fn is_shared_fixtures(path: &Path) -> bool {
    path.file_stem().and_then(|stem| stem.to_str()) == Some(SHARED_FIXTURES_STEM)
}

fn parse_file(text: &str, relative: &str) -> Result<SuiteFile, SuiteError> {
    if relative.ends_with(".json") {
        serde_json::from_str(text).map_err(|err| SuiteError {
            file: relative.to_owned(),
            line: Some(err.line()),
            column: Some(err.column()),
            message: err.to_string(),
        })
    } else {
        serde_yaml::from_str(text).map_err(|err| {
            let location = err.location();
            SuiteError {
                file: relative.to_owned(),
                line: location.as_ref().map(serde_yaml::Location::line),
                column: location.as_ref().map(serde_yaml::Location::column),
                message: err.to_string(),
            }
        })
    }
}

fn merge_fixtures(into: &mut Fixtures, from: Fixtures, file: &str, errors: &mut Vec<SuiteError>) {
    for (name, context) in from.contexts {
        if into.contexts.insert(name.clone(), context).is_some() {
            errors.push(SuiteError::at(
                file,
                format!("the context fixture `{name}` is defined twice"),
            ));
        }
    }
    for (name, entities) in from.entities {
        if into.entities.insert(name.clone(), entities).is_some() {
            errors.push(SuiteError::at(
                file,
                format!("the entity fixture `{name}` is defined twice"),
            ));
        }
    }
}

/// What a file's cases can see.
struct Scope<'a> {
    file: &'a str,
    suite: &'a str,
    local: &'a Fixtures,
    shared: &'a Fixtures,
    defaults: &'a Defaults,
}

impl Scope<'_> {
    fn case(&self, spec: &CaseSpec) -> Result<TestCase, String> {
        let request = self.request(
            (&spec.principal, &spec.action, &spec.resource),
            spec.context.as_ref(),
            spec.entities.as_deref(),
        )?;
        Ok(TestCase {
            file: self.file.to_owned(),
            suite: self.suite.to_owned(),
            name: spec.name.clone(),
            request,
            expect: spec.expect,
            reasons: spec.reasons.clone(),
            errors: spec.errors.clone(),
        })
    }

    fn matrix(&self, spec: &MatrixSpec) -> Result<Vec<TestCase>, String> {
        for (principal, row) in &spec.expect {
            if !spec.principals.contains_key(principal) {
                return Err(format!(
                    "`expect` names the unknown principal `{principal}`"
                ));
            }
            for (action, cell) in row {
                if !spec.actions.contains_key(action) {
                    return Err(format!(
                        "`expect.{principal}` names the unknown action `{action}`"
                    ));
                }
                if let MatrixCell::PerResource(per_resource) = cell
                    && let Some(unknown) = per_resource
                        .keys()
                        .find(|name| !spec.resources.contains_key(*name))
                {
                    return Err(format!(
                        "`expect.{principal}.{action}` names the unknown resource `{unknown}`"
                    ));
                }
            }
        }
        let mut cases = Vec::new();
        for (principal_alias, principal) in &spec.principals {
            for (action_alias, action) in &spec.actions {
                for (resource_alias, resource) in &spec.resources {
                    let cell = spec
                        .expect
                        .get(principal_alias)
                        .and_then(|row| row.get(action_alias));
                    let expect = match cell {
                        Some(MatrixCell::Every(outcome)) => Some(*outcome),
                        Some(MatrixCell::PerResource(per_resource)) => {
                            per_resource.get(resource_alias).copied()
                        }
                        None => None,
                    }
                    .ok_or_else(|| {
                        format!(
                            "no expectation for `{principal_alias}` / `{action_alias}` / `{resource_alias}`; every cell must be given"
                        )
                    })?;
                    let request = self.request(
                        (principal, action, resource),
                        spec.context.as_ref(),
                        spec.entities.as_deref(),
                    )?;
                    cases.push(TestCase {
                        file: self.file.to_owned(),
                        suite: self.suite.to_owned(),
                        name: format!(
                            "{}: {principal_alias} / {action_alias} / {resource_alias}",
                            spec.name
                        ),
                        request,
                        expect,
                        reasons: None,
                        errors: None,
                    });
                }
            }
        }
        Ok(cases)
    }

    fn request(
        &self,
        (principal, action, resource): (&UidSpec, &UidSpec, &UidSpec),
        context: Option<&ContextSpec>,
        entities: Option<&[EntitySpec]>,
    ) -> Result<Request, String> {
        let mut context_object = serde_json::Map::new();
        if let Some(spec) = context.or(self.defaults.context.as_ref()) {
            self.merge_context(spec, &mut context_object, 0)?;
        }
        let mut entity_list = Vec::new();
        for spec in entities
            .or(self.defaults.entities.as_deref())
            .unwrap_or_default()
        {
            self.collect_entities(spec, &mut entity_list, 0)?;
        }
        Ok(Request {
            principal: uid(principal, "principal")?,
            action: uid(action, "action")?,
            resource: uid(resource, "resource")?,
            context: ContextInput::Json(serde_json::Value::Object(context_object).to_string()),
            entities: entity_list
                .iter()
                .map(|entity| entity.to_input().map_err(|err| err.to_string()))
                .collect::<Result<_, _>>()
                .map_err(|err| format!("`entities`: {err}"))?,
        })
    }

    fn merge_context(
        &self,
        spec: &ContextSpec,
        into: &mut serde_json::Map<String, serde_json::Value>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_FIXTURE_DEPTH {
            return Err("context fixtures refer to each other in a cycle".to_owned());
        }
        match spec {
            ContextSpec::Fixture(name) => {
                let fixture = self
                    .local
                    .contexts
                    .get(name)
                    .or_else(|| self.shared.contexts.get(name))
                    .ok_or_else(|| format!("unknown context fixture `{name}`"))?;
                self.merge_context(fixture, into, depth + 1)
            }
            ContextSpec::Inline(object) => {
                into.extend(object.iter().map(|(k, v)| (k.clone(), v.clone())));
                Ok(())
            }
            ContextSpec::Merged(parts) => parts
                .iter()
                .try_for_each(|part| self.merge_context(part, into, depth + 1)),
        }
    }

    fn collect_entities(
        &self,
        spec: &EntitySpec,
        into: &mut Vec<EntityJson>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_FIXTURE_DEPTH {
            return Err("entity fixtures refer to each other in a cycle".to_owned());
        }
        match spec {
            EntitySpec::Fixture(name) => {
                let group = self
                    .local
                    .entities
                    .get(name)
                    .or_else(|| self.shared.entities.get(name))
                    .ok_or_else(|| format!("unknown entity fixture `{name}`"))?;
                group
                    .iter()
                    .try_for_each(|item| self.collect_entities(item, into, depth + 1))
            }
            EntitySpec::Inline(entity) => {
                into.push(entity.clone());
                Ok(())
            }
        }
    }
}

/// Reads a request file (YAML or JSON): a list of requests without
/// expectations.
pub fn load_requests(path: &Path) -> Result<Vec<Request>, SuiteError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|err| SuiteError::at(&name, format!("cannot read: {err}")))?;
    let specs: Vec<RequestSpec> = serde_yaml::from_str(&text).map_err(|err| {
        let location = err.location();
        SuiteError {
            file: name.clone(),
            line: location.as_ref().map(serde_yaml::Location::line),
            column: location.as_ref().map(serde_yaml::Location::column),
            message: err.to_string(),
        }
    })?;
    specs
        .iter()
        .enumerate()
        .map(|(position, spec)| {
            let build = || -> Result<Request, String> {
                let context = spec.context.clone().unwrap_or_default();
                Ok(Request {
                    principal: uid(&spec.principal, "principal")?,
                    action: uid(&spec.action, "action")?,
                    resource: uid(&spec.resource, "resource")?,
                    context: ContextInput::Json(serde_json::Value::Object(context).to_string()),
                    entities: spec
                        .entities
                        .iter()
                        .map(|entity| entity.to_input().map_err(|err| err.to_string()))
                        .collect::<Result<_, _>>()?,
                })
            };
            build().map_err(|message| format!("request {position}: {message}"))
        })
        .collect::<Result<_, String>>()
        .map_err(|message| SuiteError::at(&name, message))
}

fn uid(spec: &UidSpec, field: &str) -> Result<EntityUid, String> {
    match spec {
        UidSpec::Literal(text) => {
            EntityUid::from_str(text).map_err(|err| format!("`{field}`: {err}"))
        }
        UidSpec::Parts(parts) => Ok(EntityUid::new(&parts.type_name, &parts.id)),
    }
}

/// The contexts every case of a suite uses, by action: what `diff` gives the
/// scope-derived requests, so that they carry realistic context.
pub fn contexts_by_action(cases: &[TestCase]) -> BTreeMap<EntityUid, ContextInput> {
    let mut by_action = BTreeMap::new();
    for case in cases {
        by_action
            .entry(case.request.action.clone())
            .or_insert_with(|| case.request.context.clone());
    }
    by_action
}
