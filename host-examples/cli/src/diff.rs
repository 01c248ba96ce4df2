//! `diff`: what a policy change does to access. The same requests are
//! decided by the old and the new bundle, and every request whose decision
//! or determining policies changed is listed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use cedar_edge_core::Backend;
use cedar_edge_core::{Bundle, ContextInput, EntityUid, Request, Response};
use serde::Serialize;

/// At most this many scope-derived requests per bundle; beyond it the
/// report says the set was cut.
pub const MAX_DERIVED_REQUESTS: usize = 50_000;

/// How a request's answer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// Denied before, allowed now: access widens.
    Widened,
    /// Allowed before, denied now.
    Narrowed,
    /// Same decision, other determining policies.
    ReasonsChanged,
}

/// One request whose answer changed.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// How it changed.
    pub kind: ChangeKind,
    /// The request's principal.
    pub principal: String,
    /// The request's action.
    pub action: String,
    /// The request's resource.
    pub resource: String,
    /// The old bundle's answer.
    pub before: Response,
    /// The new bundle's answer.
    pub after: Response,
}

/// The impact of a change.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    /// The old bundle's id.
    pub old_bundle_id: String,
    /// The new bundle's id.
    pub new_bundle_id: String,
    /// How many distinct requests were replayed.
    pub requests: usize,
    /// Whether the scope-derived set was cut at [`MAX_DERIVED_REQUESTS`].
    pub truncated: bool,
    /// Every changed request, widenings first.
    pub changes: Vec<Change>,
}

impl DiffReport {
    /// How many changes are of `kind`.
    pub fn count(&self, kind: ChangeKind) -> usize {
        self.changes
            .iter()
            .filter(|change| change.kind == kind)
            .count()
    }
}

/// Builds the request set: the given requests, deduplicated.
#[derive(Debug, Default)]
pub struct RequestSet {
    requests: Vec<Request>,
    seen: BTreeSet<String>,
    /// Whether a derived set hit the cap.
    pub truncated: bool,
}

impl RequestSet {
    /// Adds a request unless an identical one is already in.
    pub fn add(&mut self, request: Request) {
        let key = format!(
            "{}|{}|{}|{:?}|{:?}",
            request.principal, request.action, request.resource, request.context, request.entities
        );
        if self.seen.insert(key) {
            self.requests.push(request);
        }
    }

    /// Adds principal × action × resource combinations that the bundle's
    /// schema allows, over the bundle's entities. Each takes the context
    /// of a test case with the same action when there is one.
    pub fn add_scope_derived(
        &mut self,
        bundle: &Bundle,
        contexts: &BTreeMap<EntityUid, ContextInput>,
    ) {
        let mut by_type: BTreeMap<String, Vec<EntityUid>> = BTreeMap::new();
        for entity in bundle.entities().iter() {
            let uid = entity.uid();
            by_type
                .entry(uid.type_name().to_string())
                .or_default()
                .push(EntityUid::new(
                    uid.type_name().to_string(),
                    uid.id().unescaped(),
                ));
        }
        let Some(schema) = bundle.schema() else {
            return;
        };
        let mut added = 0usize;
        for action in schema.actions() {
            let action_uid =
                EntityUid::new(action.type_name().to_string(), action.id().unescaped());
            let of_types = |types: Option<Vec<String>>| -> Vec<EntityUid> {
                types
                    .unwrap_or_default()
                    .iter()
                    .flat_map(|name| by_type.get(name).cloned().unwrap_or_default())
                    .collect()
            };
            let principals = of_types(
                schema
                    .principals_for_action(action)
                    .map(|types| types.map(ToString::to_string).collect()),
            );
            let resources = of_types(
                schema
                    .resources_for_action(action)
                    .map(|types| types.map(ToString::to_string).collect()),
            );
            let context = contexts
                .get(&action_uid)
                .cloned()
                .unwrap_or_else(|| ContextInput::Json("{}".to_owned()));
            for principal in &principals {
                for resource in &resources {
                    if added >= MAX_DERIVED_REQUESTS {
                        self.truncated = true;
                        return;
                    }
                    added += 1;
                    self.add(Request {
                        principal: principal.clone(),
                        action: action_uid.clone(),
                        resource: resource.clone(),
                        context: context.clone(),
                        entities: Vec::new(),
                    });
                }
            }
        }
    }

    /// The requests, in the order they were added.
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }
}

/// Decides every request with both bundles and lists what changed.
pub fn compare(old: &dyn Backend, new: &dyn Backend, set: &RequestSet) -> DiffReport {
    let requests = set.requests();
    let before = old.authorize_batch(requests);
    let after = new.authorize_batch(requests);
    let mut changes = Vec::new();
    for ((request, before), after) in requests.iter().zip(before).zip(after) {
        let before = before
            .unwrap_or_else(|err| Response::denied_by_error(err.to_string(), old.bundle_id()));
        let after =
            after.unwrap_or_else(|err| Response::denied_by_error(err.to_string(), new.bundle_id()));
        let kind = match (before.is_allowed(), after.is_allowed()) {
            (false, true) => ChangeKind::Widened,
            (true, false) => ChangeKind::Narrowed,
            _ if before.determining_policies != after.determining_policies => {
                ChangeKind::ReasonsChanged
            }
            _ => continue,
        };
        changes.push(Change {
            kind,
            principal: request.principal.to_string(),
            action: request.action.to_string(),
            resource: request.resource.to_string(),
            before,
            after,
        });
    }
    changes.sort_by(|a, b| {
        (a.kind, &a.principal, &a.action, &a.resource).cmp(&(
            b.kind,
            &b.principal,
            &b.action,
            &b.resource,
        ))
    });
    DiffReport {
        old_bundle_id: old.bundle_id().to_owned(),
        new_bundle_id: new.bundle_id().to_owned(),
        requests: requests.len(),
        truncated: set.truncated,
        changes,
    }
}

/// The report as a merge-request comment.
pub fn markdown(report: &DiffReport) -> String {
    let mut out = String::new();
    let total = report.changes.len();
    let _ = writeln!(out, "### Cedar policy impact\n");
    if total == 0 {
        let _ = writeln!(
            out,
            "No decision changed across {} replayed requests.\n",
            report.requests
        );
    } else {
        let _ = writeln!(
            out,
            "{total} of {} replayed requests changed.\n",
            report.requests
        );
    }
    let _ = writeln!(out, "| change | requests |\n| --- | --- |");
    for (kind, label) in [
        (ChangeKind::Widened, "**widened** (deny → allow)"),
        (ChangeKind::Narrowed, "narrowed (allow → deny)"),
        (ChangeKind::ReasonsChanged, "same decision, other policies"),
    ] {
        let _ = writeln!(out, "| {label} | {} |", report.count(kind));
    }
    for (kind, title) in [
        (ChangeKind::Widened, "Widened: now allowed"),
        (ChangeKind::Narrowed, "Narrowed: now denied"),
        (ChangeKind::ReasonsChanged, "Determining policies changed"),
    ] {
        let rows: Vec<&Change> = report
            .changes
            .iter()
            .filter(|change| change.kind == kind)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n#### {title}\n\n| principal | action | resource | before | after |\n| --- | --- | --- | --- | --- |"
        );
        for change in rows {
            let _ = writeln!(
                out,
                "| `{}` | `{}` | `{}` | {} | {} |",
                cell(&change.principal),
                cell(&change.action),
                cell(&change.resource),
                answer(&change.before),
                answer(&change.after)
            );
        }
    }
    let _ = writeln!(
        out,
        "\n<sub>old bundle `{}`, new bundle `{}`{}</sub>",
        report.old_bundle_id,
        report.new_bundle_id,
        if report.truncated {
            "; the scope-derived request set was cut short"
        } else {
            ""
        }
    );
    out
}

fn answer(response: &Response) -> String {
    let decision = if response.is_allowed() {
        "allow"
    } else {
        "deny"
    };
    if response.determining_policies.is_empty() {
        decision.to_owned()
    } else {
        let ids: Vec<String> = response
            .determining_policies
            .iter()
            .map(|id| format!("`{}`", cell(id)))
            .collect();
        format!("{decision} ({})", ids.join(", "))
    }
}

/// Text safe inside a markdown table cell and a code span.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('`', "'")
}
