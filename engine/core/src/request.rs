//! Requests, the limits they are checked against, and their conversion into
//! Cedar's own types.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::{LazyLock, RwLock};

use crate::cedar_internals::{Extensions, SmolStr, ast};
use cedar_policy::{EntityId, EntityTypeName, RestrictedExpression};
use ref_cast::RefCast;

use crate::value::{Attributes, EntityUid, ExtensionKind, ValueNode};

/// One authorization question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Who acts.
    pub principal: EntityUid,
    /// What they do.
    pub action: EntityUid,
    /// What they act on.
    pub resource: EntityUid,
    /// Facts about the request.
    pub context: ContextInput,
    /// Entities that exist for this request only, such as a principal built
    /// from token claims.
    pub entities: Vec<EntityInput>,
}

/// The request context, typed or as Cedar JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextInput {
    /// Typed values: converted without parsing.
    Typed(Attributes),
    /// Cedar's JSON context form, converted by Cedar on every call.
    Json(String),
}

impl Default for ContextInput {
    fn default() -> Self {
        Self::Typed(Attributes::default())
    }
}

/// An entity supplied with one request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EntityInput {
    /// Its uid.
    pub uid: EntityUid,
    /// Its attributes.
    pub attrs: Attributes,
    /// Its direct parents.
    pub parents: Vec<EntityUid>,
    /// Its tags; the schema must declare tags for its type.
    pub tags: Attributes,
}

/// Limits every request is checked against before Cedar sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest context in bytes: the JSON text, or the typed strings summed.
    pub max_context_bytes: u32,
    /// Deepest nesting of sets and records.
    pub max_depth: u32,
    /// Most value nodes in one request, context and entities together.
    pub max_nodes: u32,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_context_bytes: 1024 * 1024,
            max_depth: 32,
            max_nodes: 10_000,
        }
    }
}

/// Why a request got no decision. Every host treats it as a deny.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
pub enum RequestError {
    /// A uid, context or entity that Cedar or the schema rejects.
    #[error("invalid `{field}`: {message}")]
    #[diagnostic(code(cedar_edge::request::invalid))]
    Invalid {
        /// The part of the request at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A request over one of the limits.
    #[error("`{field}` is over a limit: {message}")]
    #[diagnostic(code(cedar_edge::request::limit))]
    LimitExceeded {
        /// The part of the request at fault.
        field: String,
        /// Which limit, and by how much.
        message: String,
    },
}

impl RequestError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl ToString) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.to_string(),
        }
    }

    fn limit(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::LimitExceeded {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub(crate) fn cedar_uid(
    uid: &EntityUid,
    field: &str,
) -> Result<cedar_policy::EntityUid, RequestError> {
    let type_name = entity_type_name(&uid.type_name).map_err(|err| {
        RequestError::invalid(
            field,
            format!("`{}` is not an entity type name: {err}", uid.type_name),
        )
    })?;
    Ok(cedar_policy::EntityUid::from_type_name_and_id(
        type_name,
        EntityId::new(&uid.id),
    ))
}

/// How many parsed type names [`entity_type_name`] keeps.
const MAX_KEPT_TYPE_NAMES: usize = 1024;

/// Parses an entity type name. Cedar's parser costs about a microsecond per
/// name, and requests name the same few types again and again, so parsed
/// names are kept; the store is bounded, so requests naming ever new types
/// cannot grow it, only miss it.
fn entity_type_name(text: &str) -> Result<EntityTypeName, String> {
    static KEPT: LazyLock<RwLock<HashMap<String, EntityTypeName>>> = LazyLock::new(RwLock::default);
    if let Ok(names) = KEPT.read()
        && let Some(name) = names.get(text)
    {
        return Ok(name.clone());
    }
    let name = EntityTypeName::from_str(text).map_err(|err| err.to_string())?;
    if let Ok(mut names) = KEPT.write()
        && names.len() < MAX_KEPT_TYPE_NAMES
    {
        names.insert(text.to_owned(), name.clone());
    }
    Ok(name)
}

/// Counts nodes across a whole request, so that many small parts cannot add
/// up to more than one big part is allowed.
pub(crate) struct NodeBudget {
    remaining: u32,
}

impl NodeBudget {
    pub(crate) fn new(limits: &RequestLimits) -> Self {
        Self {
            remaining: limits.max_nodes,
        }
    }

    /// Nodes not yet spent.
    pub(crate) fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Spends `nodes` if that many remain.
    pub(crate) fn try_spend(&mut self, nodes: u32) -> bool {
        match self.remaining.checked_sub(nodes) {
            Some(left) => {
                self.remaining = left;
                true
            }
            None => false,
        }
    }
}

/// Checks a flat tree's shape and limits, then builds Cedar's values for its
/// top-level fields.
pub(crate) fn cedar_fields(
    attributes: &Attributes,
    field: &str,
    limits: &RequestLimits,
    budget: &mut NodeBudget,
) -> Result<Vec<(String, RestrictedExpression)>, RequestError> {
    check_tree(attributes, field, limits, budget)?;
    attributes
        .fields
        .iter()
        .map(|(name, index)| Ok((name.clone(), cedar_value(&attributes.nodes, *index, field)?)))
        .collect()
}

/// Enforces the tree rules: children before parents, each node used once,
/// depth and size within limits. Sharing a node twice is refused because it
/// would let a small tree expand exponentially.
fn check_tree(
    attributes: &Attributes,
    field: &str,
    limits: &RequestLimits,
    budget: &mut NodeBudget,
) -> Result<(), RequestError> {
    let node_count = u32::try_from(attributes.nodes.len()).unwrap_or(u32::MAX);
    if node_count > budget.remaining {
        return Err(RequestError::limit(
            field,
            format!("the request holds more than {} values", limits.max_nodes),
        ));
    }
    budget.remaining -= node_count;

    let mut depth = vec![0u32; attributes.nodes.len()];
    let mut used = vec![false; attributes.nodes.len()];
    let mut text_bytes: usize = 0;
    for (index, node) in attributes.nodes.iter().enumerate() {
        let mut deepest_child = 0;
        let mut visit = |child: u32, used: &mut [bool]| -> Result<(), RequestError> {
            claim_child(child, index, used, field)?;
            deepest_child = deepest_child.max(depth.get(child as usize).copied().unwrap_or(0));
            Ok(())
        };
        match node {
            ValueNode::Set(children) => {
                for &child in children {
                    visit(child, &mut used)?;
                }
            }
            ValueNode::ExtensionCall(name, args) => {
                text_bytes += name.len();
                for &arg in args {
                    visit(arg, &mut used)?;
                }
            }
            ValueNode::Record(fields) => {
                for (name, child) in fields {
                    text_bytes += name.len();
                    visit(*child, &mut used)?;
                }
            }
            ValueNode::String(text) | ValueNode::Extension(_, text) => text_bytes += text.len(),
            ValueNode::Entity(uid) => text_bytes += uid.type_name.len() + uid.id.len(),
            ValueNode::Bool(_) | ValueNode::Long(_) => {}
        }
        let node_depth = deepest_child + 1;
        if node_depth > limits.max_depth {
            return Err(RequestError::limit(
                field,
                format!("values nest deeper than {} levels", limits.max_depth),
            ));
        }
        if let Some(slot) = depth.get_mut(index) {
            *slot = node_depth;
        }
    }
    for (name, index) in &attributes.fields {
        text_bytes += name.len();
        claim_child(*index, attributes.nodes.len(), &mut used, field)?;
    }
    if text_bytes > limits.max_context_bytes as usize {
        return Err(RequestError::limit(
            field,
            format!(
                "{text_bytes} bytes of text, over the limit of {} bytes",
                limits.max_context_bytes
            ),
        ));
    }
    Ok(())
}

/// Marks `child` as used by the node at `parent`, which must come after it.
fn claim_child(
    child: u32,
    parent: usize,
    used: &mut [bool],
    field: &str,
) -> Result<(), RequestError> {
    let child_index = child as usize;
    match used.get_mut(child_index) {
        Some(slot) if child_index < parent && !*slot => {
            *slot = true;
            Ok(())
        }
        Some(_) if child_index < parent => Err(RequestError::invalid(
            field,
            format!("value node {child} is used twice"),
        )),
        _ => Err(RequestError::invalid(
            field,
            format!("value node {parent} points at node {child}, which does not come before it"),
        )),
    }
}

/// Builds Cedar's value for one node. Recursion is bounded by the depth limit,
/// which [`check_tree`] has already enforced.
fn cedar_value(
    nodes: &[ValueNode],
    index: u32,
    field: &str,
) -> Result<RestrictedExpression, RequestError> {
    let node = nodes.get(index as usize).ok_or_else(|| {
        RequestError::invalid(field, format!("value node {index} does not exist"))
    })?;
    Ok(match node {
        ValueNode::Bool(b) => RestrictedExpression::new_bool(*b),
        ValueNode::Long(n) => RestrictedExpression::new_long(*n),
        ValueNode::String(text) => RestrictedExpression::new_string(text.clone()),
        ValueNode::Entity(uid) => RestrictedExpression::new_entity_uid(cedar_uid(uid, field)?),
        ValueNode::Extension(kind, arg) => extension_call(*kind, arg),
        ValueNode::ExtensionCall(name, args) => {
            let function = ast::Name::parse_unqualified_name(name).map_err(|err| {
                RequestError::invalid(field, format!("`{name}` is not a function name: {err}"))
            })?;
            let args = args
                .iter()
                .map(|arg| cedar_value(nodes, *arg, field).map(|value| value.as_ref().clone()))
                .collect::<Result<Vec<_>, _>>()?;
            RestrictedExpression::ref_cast(&ast::RestrictedExpr::call_extension_fn(function, args))
                .clone()
        }
        ValueNode::Set(children) => RestrictedExpression::new_set(
            children
                .iter()
                .map(|child| cedar_value(nodes, *child, field))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        ValueNode::Record(fields) => RestrictedExpression::new_record(
            fields
                .iter()
                .map(|(name, child)| Ok((name.clone(), cedar_value(nodes, *child, field)?)))
                .collect::<Result<Vec<_>, RequestError>>()?,
        )
        .map_err(|err| RequestError::invalid(field, err))?,
    })
}

/// The constructor names, parsed once per process. cedar-policy's
/// `RestrictedExpression::new_ip` and friends parse the name on every call,
/// which costs more than evaluating a small policy set.
static CONSTRUCTOR_NAMES: LazyLock<Option<[ast::Name; 4]>> = LazyLock::new(|| {
    let parse = |name: &str| ast::Name::parse_unqualified_name(name).ok();
    Some([
        parse("ip")?,
        parse("decimal")?,
        parse("datetime")?,
        parse("duration")?,
    ])
});

/// A call to the extension constructor for `kind`, which Cedar evaluates
/// (and so checks) when it builds the context or entity.
fn extension_call(kind: ExtensionKind, arg: &str) -> RestrictedExpression {
    let slot = match kind {
        ExtensionKind::Ip => 0,
        ExtensionKind::Decimal => 1,
        ExtensionKind::Datetime => 2,
        ExtensionKind::Duration => 3,
    };
    match CONSTRUCTOR_NAMES.as_ref().and_then(|names| names.get(slot)) {
        Some(name) => RestrictedExpression::ref_cast(&ast::RestrictedExpr::call_extension_fn(
            name.clone(),
            [ast::RestrictedExpr::val(arg)],
        ))
        .clone(),
        // Unreachable with valid constants; the public API is the fallback.
        None => match kind {
            ExtensionKind::Ip => RestrictedExpression::new_ip(arg),
            ExtensionKind::Decimal => RestrictedExpression::new_decimal(arg),
            ExtensionKind::Datetime => RestrictedExpression::new_datetime(arg),
            ExtensionKind::Duration => RestrictedExpression::new_duration(arg),
        },
    }
}

/// Builds a request-scoped Cedar entity.
pub(crate) fn cedar_entity(
    entity: &EntityInput,
    position: usize,
    limits: &RequestLimits,
    budget: &mut NodeBudget,
) -> Result<ast::Entity, RequestError> {
    let field = format!("entities[{position}]");
    let uid = cedar_uid(&entity.uid, &field)?;
    // Cedar's own representation, built directly: the public `Entity`
    // would be copied into it once more.
    let fields = |attributes: &Attributes, field: &str, budget: &mut NodeBudget| {
        cedar_fields(attributes, field, limits, budget).map(|fields| {
            fields
                .into_iter()
                .map(|(name, value)| (SmolStr::from(name), value.as_ref().clone()))
                .collect::<HashMap<_, _>>()
        })
    };
    let attrs = fields(&entity.attrs, &field, budget)?;
    let tags = fields(&entity.tags, &format!("{field}.tags"), budget)?;
    let parents = entity
        .parents
        .iter()
        .map(|parent| cedar_uid(parent, &field).map(ast::EntityUID::from))
        .collect::<Result<HashSet<_>, _>>()?;
    ast::Entity::new(
        uid.into(),
        attrs,
        HashSet::new(),
        parents,
        tags,
        Extensions::all_available(),
    )
    .map_err(|err| RequestError::invalid(format!("{field} `{}`", entity.uid), err))
}

/// Rejects oversized or too deeply nested JSON before Cedar parses it. The
/// scan is linear and allocation-free, so a hostile context costs little.
pub(crate) fn check_json_context(json: &str, limits: &RequestLimits) -> Result<(), RequestError> {
    if json.len() > limits.max_context_bytes as usize {
        return Err(RequestError::limit(
            "context",
            format!(
                "{} bytes of JSON, over the limit of {} bytes",
                json.len(),
                limits.max_context_bytes
            ),
        ));
    }
    let mut depth = 0u32;
    let mut in_string = false;
    let mut escaped = false;
    for byte in json.bytes() {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                // The context object itself is one level deeper than its values.
                if depth > limits.max_depth + 1 {
                    return Err(RequestError::limit(
                        "context",
                        format!("values nest deeper than {} levels", limits.max_depth),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}
