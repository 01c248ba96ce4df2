//! The AuthZEN 1.0 Search APIs: subject, resource and action search over
//! the serving bundle, with `page.next_token` paging.
//!
//! The HTTP layer reads the body as JSON, picks the [`SearchKind`] from the
//! path (`/access/v1/search/{subject,resource,action}`) and calls
//! [`search`]; an `Err` is a 400 whose body is the message. A search is CPU
//! work of up to tens of milliseconds on large stores: call it from
//! `tokio::task::spawn_blocking`, not on the reactor.
//!
//! Answers:
//! - The candidates are the bundle's own entities of the searched type
//!   (for actions: the schema's actions and those the policies name), in
//!   id order. Each result is confirmed by the core's authorization of the
//!   request with the candidate in place, then by the same forbid-error
//!   rule the evaluation API applies (the mapping's `on_forbid_error`,
//!   when the bundle has a mapping), so a result is exactly what
//!   `/access/v1/evaluation` would allow. The core skips only
//!   candidates no permit can reach, which every authorization denies.
//! - The search runs natively in the host on the bundle the mapping shares,
//!   the same core the component runs, not through the component.
//! - The searched party's `id` is ignored, as the specification says, and
//!   so are its `properties`. The fixed parties' `properties` are used as
//!   in an evaluation: with [`RequestAttributes::Trusted`], as a
//!   request-scoped entity when the bundle does not hold the entity.
//!   Unknown fields are ignored.
//!
//! Paging: results come `limit` at a time (`page.limit`, else
//! [`SearchLimits::default_page_size`], at most
//! [`SearchLimits::max_page_size`]). A response carries `page` when the
//! request had one or when more results remain: `next_token` (empty on the
//! last page) and `count`. No `total`: counting would authorize every
//! candidate on every page. The token is opaque text bound to the bundle id
//! and to the query (every part but `page.token`, with the effective
//! limit); a token from another bundle (the bundle was reloaded) or
//! another query is refused with 400 and a message saying to start again
//! without a token. Its check is a SHA-256 digest, not a secret: it catches
//! corruption and mix-ups, and a forged token gains nothing, since every
//! page is computed from the query itself and every result is authorized.

use std::collections::BTreeMap;

use base64::Engine as _;
use cedar_edge_core::{Request, SearchSlot, digest_of_parts};
use serde_json::{Map, Value, json};

use crate::authzen::{self, Names};
use crate::config::RequestAttributes;
use crate::state::LoadedBundle;

/// Which search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchKind {
    /// `/access/v1/search/subject`: which subjects may take the action on
    /// the resource?
    Subject,
    /// `/access/v1/search/resource`: which resources may the subject take
    /// the action on?
    Resource,
    /// `/access/v1/search/action`: which actions may the subject take on
    /// the resource?
    Action,
}

impl SearchKind {
    /// The name in its endpoint path and in audit records.
    pub fn name(self) -> &'static str {
        match self {
            Self::Subject => "subject",
            Self::Resource => "resource",
            Self::Action => "action",
        }
    }

    fn slot(self) -> SearchSlot {
        match self {
            Self::Subject => SearchSlot::Principal,
            Self::Resource => SearchSlot::Resource,
            Self::Action => SearchSlot::Action,
        }
    }
}

/// Page sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchLimits {
    /// Results per page when the request gives no `page.limit`.
    pub default_page_size: usize,
    /// The most results per page; a larger `page.limit` is lowered to it.
    pub max_page_size: usize,
}

impl Default for SearchLimits {
    /// The decision service's `pdp.limits.max_search_page` default for both.
    fn default() -> Self {
        Self {
            default_page_size: 1_000,
            max_page_size: 1_000,
        }
    }
}

/// Why a search request got no answer; each is a 400 (Bad Request) whose
/// body is the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum SearchError {
    /// A part of the request is missing or has the wrong JSON type.
    #[error("{0}")]
    #[diagnostic(code(cedar_edge::search::malformed))]
    Malformed(String),
    /// `page.token` is not one this query can continue from.
    #[error("{0}")]
    #[diagnostic(code(cedar_edge::search::token))]
    Token(String),
    /// The bundle cannot decide the query for any candidate: a name Cedar
    /// rejects, or a context the schema rejects.
    #[error("cannot search: {0}")]
    #[diagnostic(code(cedar_edge::search::query))]
    Query(String),
}

impl SearchError {
    /// The HTTP status for this error.
    pub fn status_code(&self) -> u16 {
        400
    }
}

/// The most refusal messages a response carries in `context`.
const MAX_REPORTED_REFUSALS: usize = 10;

/// Answers one AuthZEN search request `body` over `active`, with the same
/// names and the caller's same `attributes` setting as its evaluations.
/// Returns the response body.
pub fn search(
    kind: SearchKind,
    body: &Value,
    active: &LoadedBundle,
    names: &Names<'_>,
    attributes: RequestAttributes,
    limits: SearchLimits,
) -> Result<Value, SearchError> {
    let query = Query::parse(kind, body)?;
    let limit = query
        .limit
        .map_or(limits.default_page_size, |asked| {
            usize::try_from(asked).unwrap_or(usize::MAX)
        })
        .min(limits.max_page_size);
    let bundle = &active.bundle;
    let binding = Binding::new(active.bundle_id(), &query, limit);
    let after = match query.token.as_deref() {
        None | Some("") => None,
        Some(token) => binding.open(token)?,
    };

    let request = query.template(names, attributes, |uid| bundle.has_entity(uid))?;
    let mut found = bundle
        .search(&request, kind.slot(), after.as_deref())
        .map_err(|err| SearchError::Query(err.to_string()))?;

    let mut results = Vec::new();
    let mut last_id = None;
    let mut more = false;
    let mut refusals = Vec::new();
    for hit in found.by_ref() {
        let allowed = match hit.outcome {
            // The evaluation API's rule for erroring forbids.
            Ok(response) => match &active.mapping {
                Some(mapping) => mapping.apply_forbid_errors(response).is_allowed(),
                None => response.is_allowed(),
            },
            Err(err) => {
                // An action the schema does not declare for these types is
                // not an answer, not a fault of the query.
                if kind != SearchKind::Action && refusals.len() < MAX_REPORTED_REFUSALS {
                    refusals.push(format!("{}: {err}", hit.uid));
                }
                false
            }
        };
        if !allowed {
            continue;
        }
        if results.len() == limit {
            more = true;
            break;
        }
        results.push(query.result(&hit.uid.id));
        last_id = Some(hit.uid.id);
    }

    let mut response = Map::new();
    if query.paged || more {
        let next_token = if more {
            // A page of `limit` 0 continues from where it started.
            binding.issue(last_id.as_deref().or(after.as_deref()))
        } else {
            String::new()
        };
        response.insert(
            "page".to_owned(),
            json!({ "next_token": next_token, "count": results.len() }),
        );
    }
    if !refusals.is_empty() {
        response.insert(
            "context".to_owned(),
            json!({ "reason_admin": { "errors": refusals } }),
        );
    }
    response.insert("results".to_owned(), Value::Array(results));
    Ok(Value::Object(response))
}

/// A subject or resource as the request gives it.
#[derive(Debug)]
struct Party {
    kind: String,
    /// `None` for the searched party, whose id is ignored.
    id: Option<String>,
    properties: Option<Map<String, Value>>,
}

impl Party {
    /// As an evaluation names it; the searched party's id is empty.
    fn as_entity(&self) -> authzen::Entity<'_> {
        authzen::Entity {
            kind: &self.kind,
            id: self.id.as_deref().unwrap_or_default(),
            properties: self.properties.as_ref(),
        }
    }
}

/// A search request, read.
#[derive(Debug)]
struct Query {
    kind: SearchKind,
    subject: Party,
    /// `None` in an action search.
    action: Option<(String, Option<Map<String, Value>>)>,
    resource: Party,
    context: Option<Map<String, Value>>,
    paged: bool,
    token: Option<String>,
    limit: Option<u64>,
}

impl Query {
    fn parse(kind: SearchKind, body: &Value) -> Result<Self, SearchError> {
        let Value::Object(body) = body else {
            return Err(SearchError::Malformed(
                "the request body must be a JSON object".to_owned(),
            ));
        };
        let party = |name: &str, searched: bool| -> Result<Party, SearchError> {
            let part = required_object(body, name, name)?;
            let kind = required_string(part, "type", name)?;
            let id = if searched {
                None
            } else {
                Some(required_string(part, "id", name)?)
            };
            let properties = optional_object(part, "properties", &format!("{name}.properties"))?
                .filter(|_| !searched)
                .cloned();
            Ok(Party {
                kind,
                id,
                properties,
            })
        };
        let subject = party("subject", kind == SearchKind::Subject)?;
        let resource = party("resource", kind == SearchKind::Resource)?;
        // The action search has no `action`; one sent anyway is ignored.
        let action = if kind == SearchKind::Action {
            None
        } else {
            let part = required_object(body, "action", "action")?;
            let name = required_string(part, "name", "action")?;
            let properties = optional_object(part, "properties", "action.properties")?.cloned();
            Some((name, properties))
        };
        let context = optional_object(body, "context", "context")?.cloned();
        let page = optional_object(body, "page", "page")?;
        let token = match page.and_then(|page| page.get("token")) {
            None | Some(Value::Null) => None,
            Some(Value::String(token)) => Some(token.clone()),
            Some(_) => {
                return Err(SearchError::Malformed(
                    "`page.token` must be a string".to_owned(),
                ));
            }
        };
        let limit = match page.and_then(|page| page.get("limit")) {
            None | Some(Value::Null) => None,
            Some(value) => Some(value.as_u64().ok_or_else(|| {
                SearchError::Malformed("`page.limit` must be a non-negative integer".to_owned())
            })?),
        };
        Ok(Self {
            kind,
            subject,
            action,
            resource,
            context,
            paged: page.is_some(),
            token,
            limit,
        })
    }

    /// The Cedar request with the searched part's type and an empty id,
    /// mapped by the same names as an evaluation.
    fn template(
        &self,
        names: &Names<'_>,
        attributes: RequestAttributes,
        known: impl Fn(&cedar_edge_core::EntityUid) -> bool,
    ) -> Result<Request, SearchError> {
        let name = self.action.as_ref().map_or("", |(name, _)| name.as_str());
        let evaluation = authzen::Evaluation {
            subject: self.subject.as_entity(),
            action: authzen::Action { name },
            resource: self.resource.as_entity(),
            context: self.context.as_ref(),
        };
        names
            .request(&evaluation, attributes, known)
            .map_err(SearchError::Query)
    }

    /// One result, in the searched part's AuthZEN form.
    fn result(&self, id: &str) -> Value {
        match self.kind {
            SearchKind::Subject => json!({ "type": self.subject.kind, "id": id }),
            SearchKind::Resource => json!({ "type": self.resource.kind, "id": id }),
            SearchKind::Action => json!({ "name": id }),
        }
    }

    /// Every part of the query but `page.token`, in one canonical text.
    fn canonical(&self, limit: usize) -> String {
        let party = |party: &Party| json!({ "type": party.kind, "id": party.id, "properties": party.properties });
        let query = json!({
            "search": self.kind.name(),
            "subject": party(&self.subject),
            "action": self.action.as_ref().map(|(name, properties)| json!({ "name": name, "properties": properties })),
            "resource": party(&self.resource),
            "context": self.context,
            "limit": limit,
        });
        let mut text = String::new();
        canonical_json(&query, &mut text);
        text
    }
}

fn required_object<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a Map<String, Value>, SearchError> {
    optional_object(parent, key, path)?
        .ok_or_else(|| SearchError::Malformed(format!("`{path}` is missing")))
}

fn optional_object<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, SearchError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(_) => Err(SearchError::Malformed(format!(
            "`{path}` must be an object"
        ))),
    }
}

fn required_string(
    parent: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<String, SearchError> {
    match parent.get(key) {
        None | Some(Value::Null) => {
            Err(SearchError::Malformed(format!("`{path}.{key}` is missing")))
        }
        Some(Value::String(text)) if text.is_empty() => {
            Err(SearchError::Malformed(format!("`{path}.{key}` is empty")))
        }
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(SearchError::Malformed(format!(
            "`{path}.{key}` must be a string"
        ))),
    }
}

/// JSON with every object's keys sorted, whatever order the parser kept.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(fields) => {
            let sorted: BTreeMap<&String, &Value> = fields.iter().collect();
            out.push('{');
            for (position, (key, field)) in sorted.into_iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical_json(field, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (position, item) in items.iter().enumerate() {
                if position > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// What a page token is bound to: the bundle and the query.
struct Binding {
    bundle: String,
    query: String,
}

/// Marks the format, so that a later format can refuse this one clearly.
const TOKEN_VERSION: &str = "cedar-edge search token 1";
/// Hex digits kept of each digest in a token.
const TAG_LENGTH: usize = 16;

impl Binding {
    fn new(bundle_id: &str, query: &Query, limit: usize) -> Self {
        let tag = |parts: &[&[u8]]| {
            let digest = digest_of_parts(parts);
            digest.get(..TAG_LENGTH).unwrap_or(&digest).to_owned()
        };
        Self {
            bundle: tag(&[TOKEN_VERSION.as_bytes(), bundle_id.as_bytes()]),
            query: tag(&[TOKEN_VERSION.as_bytes(), query.canonical(limit).as_bytes()]),
        }
    }

    fn check(bundle: &str, query: &str, after: Option<&str>) -> String {
        let (marker, after): (&[u8], &[u8]) = match after {
            None => (b"start", b""),
            Some(after) => (b"after", after.as_bytes()),
        };
        digest_of_parts(&[
            TOKEN_VERSION.as_bytes(),
            bundle.as_bytes(),
            query.as_bytes(),
            marker,
            after,
        ])
    }

    /// A token that continues after the result `after` (from the start
    /// when `None`).
    fn issue(&self, after: Option<&str>) -> String {
        let token = json!({
            "b": self.bundle,
            "q": self.query,
            "a": after,
            "c": Self::check(&self.bundle, &self.query, after),
        });
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
    }

    /// Where a token continues, if it was issued for this bundle and query.
    fn open(&self, token: &str) -> Result<Option<String>, SearchError> {
        let altered = || {
            SearchError::Token(
                "`page.token` is not a token this search issued, or it was altered; start again without a token".to_owned(),
            )
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| altered())?;
        let fields: Value = serde_json::from_slice(&bytes).map_err(|_| altered())?;
        let text = |key: &str| fields.get(key).and_then(Value::as_str);
        let (Some(bundle), Some(query), Some(check)) = (text("b"), text("q"), text("c")) else {
            return Err(altered());
        };
        let after = match fields.get("a") {
            Some(Value::Null) => None,
            Some(Value::String(after)) => Some(after.clone()),
            _ => return Err(altered()),
        };
        if Self::check(bundle, query, after.as_deref()) != check {
            return Err(altered());
        }
        if bundle != self.bundle {
            return Err(SearchError::Token(
                "`page.token` was issued for another bundle: the policies changed since the first page; start again without a token".to_owned(),
            ));
        }
        if query != self.query {
            return Err(SearchError::Token(
                "`page.token` was issued for another query: every part of the request but `page.token` must stay as it was on the first page".to_owned(),
            ));
        }
        Ok(after)
    }
}
