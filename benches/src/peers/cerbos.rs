//! The generated bundle as one Cerbos resource policy for the kind `doc`,
//! and each request as a `CheckResources` body.
//!
//! Cerbos combines rules per role: a principal with several roles is
//! allowed when any one role's rules allow, even if a rule scoped to
//! another role denies. Cedar lets any satisfied forbid win. So permits
//! scoped to a role use Cerbos roles (the principal's roles are its Role
//! ancestors), while every deny rule is written for all roles (`*`) and
//! names the role in its condition (`"t3-r1" in P.roles`). A `*` rule joins
//! every role's evaluation, so a satisfied deny denies under all of them.
//!
//! Cerbos has no request context: the context travels as the principal
//! attribute `context`. Entity scopes (`in`) are membership in the `anc`
//! attribute, the entity itself and its transitive ancestors. Cerbos reads
//! JSON numbers as doubles and will not add a double to an int, so every
//! number in a condition is written as a double; the values are small
//! integers, which doubles hold exactly.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use cedar_edge_core::EntityUid;

use super::model::{EntityFacts, WorkloadRequest, key, keyed_attrs};
use crate::generator::{GeneratedPolicy, PolicySpec};

/// The Cerbos resource kind of the generated documents.
pub const KIND: &str = "doc";

/// One Cerbos rule.
struct Rule {
    actions: Vec<String>,
    roles: Vec<String>,
    condition: Option<String>,
}

fn quoted(text: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::Value::String(text.to_owned()).to_string()
}

fn entity(kind: &str, id: &str) -> String {
    quoted(&format!("Saas::{kind}::{id}"))
}

fn all() -> Vec<String> {
    vec!["*".to_owned()]
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn rule(spec: &PolicySpec) -> Rule {
    let tenant_pair = |tenant: &str| {
        format!(
            "{t} in P.attr.anc && {t} in R.attr.anc",
            t = entity("Tenant", tenant)
        )
    };
    match spec {
        PolicySpec::RoleFolderAction {
            role,
            action,
            folder,
            min_hour,
        } => Rule {
            actions: vec![action.clone()],
            roles: vec![role.clone()],
            condition: Some(format!(
                "{} in R.attr.anc && P.attr.context.hour >= {min_hour}.0",
                entity("Folder", folder)
            )),
        },
        PolicySpec::RoleTenantReadComment { role, tenant } => Rule {
            actions: names(&["read", "comment"]),
            roles: vec![role.clone()],
            condition: Some(format!("{} in R.attr.anc", entity("Tenant", tenant))),
        },
        PolicySpec::UserOutranksDoc { user, tenant } => Rule {
            actions: all(),
            roles: all(),
            condition: Some(format!(
                "P.id == {} && {} in R.attr.anc && P.attr.level > R.attr.level",
                quoted(user),
                entity("Tenant", tenant)
            )),
        },
        PolicySpec::FolderNeedsMfa { folder } => Rule {
            actions: names(&["delete", "admin"]),
            roles: all(),
            condition: Some(format!(
                "{} in R.attr.anc && !P.attr.context.mfa",
                entity("Folder", folder)
            )),
        },
        PolicySpec::RoleNoNightExport { role } => Rule {
            actions: names(&["export"]),
            roles: all(),
            condition: Some(format!(
                "{} in P.roles && P.attr.context.hour < 6.0",
                quoted(role)
            )),
        },
        PolicySpec::TenantPublicRead { tenant, after_hour } => Rule {
            actions: names(&["read"]),
            roles: all(),
            condition: Some(format!(
                "{} && R.attr.public == true && P.attr.context.hour > {after_hour}.0",
                tenant_pair(tenant)
            )),
        },
        PolicySpec::TenantNoWriteAbove { tenant } => Rule {
            actions: names(&["write", "share"]),
            roles: all(),
            condition: Some(format!(
                "{} && R.attr.level > P.attr.level + 1.0",
                tenant_pair(tenant)
            )),
        },
        PolicySpec::CrossTenantGuard { min_level } => Rule {
            actions: all(),
            roles: all(),
            condition: Some(format!(
                "R.attr.tenant != P.attr.tenant && R.attr.level > {min_level}.0"
            )),
        },
        PolicySpec::SeniorAudit => Rule {
            actions: names(&["audit"]),
            roles: all(),
            condition: Some("P.attr.level >= 4.0".to_owned()),
        },
        PolicySpec::MaintenanceWindow => Rule {
            actions: names(&["delete"]),
            roles: all(),
            condition: Some("P.attr.context.hour < 2.0".to_owned()),
        },
    }
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|item| quoted(item)).collect();
    format!("[{}]", items.join(", "))
}

/// The bundle as one resource policy, in YAML.
pub fn resource_policy(policies: &[GeneratedPolicy]) -> String {
    let mut out = format!(
        "# Generated from the Cedar bundle's policy model; one rule per Cedar policy.\n\
         apiVersion: api.cerbos.dev/v1\n\
         resourcePolicy:\n  resource: {}\n  version: \"default\"\n  rules:\n",
        quoted(KIND)
    );
    for policy in policies {
        let rule = rule(&policy.spec);
        let effect = if policy.forbid {
            "EFFECT_DENY"
        } else {
            "EFFECT_ALLOW"
        };
        let _ = write!(
            out,
            "    - name: {}\n      actions: {}\n      effect: {effect}\n      roles: {}\n",
            quoted(&policy.id),
            list(&rule.actions),
            list(&rule.roles)
        );
        if let Some(condition) = rule.condition {
            let _ = writeln!(
                out,
                "      condition:\n        match:\n          expr: {}",
                quoted(&condition)
            );
        }
    }
    out
}

/// Attributes in Cerbos form: entity references become keys.
fn attrs(entity: &EntityFacts) -> serde_json::Map<String, serde_json::Value> {
    let mut attrs = keyed_attrs(entity);
    let anc: Vec<String> = std::iter::once(&entity.uid)
        .chain(&entity.ancestors)
        .map(key)
        .collect();
    attrs.insert("anc".to_owned(), anc.into());
    attrs
}

/// Why a request has no Cerbos form.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The request names an entity the bundle does not have.
    #[error("`{0}` is not an entity of the bundle")]
    UnknownEntity(String),
    /// Cerbos needs at least one role.
    #[error("`{0}` has no role, and Cerbos needs at least one")]
    NoRole(String),
}

/// The `CheckResources` body for one request.
pub fn check_body(
    request: &WorkloadRequest,
    entities: &BTreeMap<&EntityUid, &EntityFacts>,
    request_id: usize,
) -> Result<serde_json::Value, CheckError> {
    let find = |uid: &EntityUid| {
        entities
            .get(uid)
            .copied()
            .ok_or_else(|| CheckError::UnknownEntity(uid.to_string()))
    };
    let principal = find(&request.principal)?;
    let resource = find(&request.resource)?;
    let roles: Vec<&str> = principal
        .ancestors
        .iter()
        .filter(|uid| uid.type_name == "Saas::Role")
        .map(|uid| uid.id.as_str())
        .collect();
    if roles.is_empty() {
        return Err(CheckError::NoRole(request.principal.to_string()));
    }
    let mut principal_attrs = attrs(principal);
    principal_attrs.insert(
        "context".to_owned(),
        serde_json::json!({ "hour": request.context.hour, "mfa": request.context.mfa }),
    );
    Ok(serde_json::json!({
        "requestId": request_id.to_string(),
        "principal": { "id": principal.uid.id, "roles": roles, "attr": principal_attrs },
        "resources": [{
            "actions": [request.action.id],
            "resource": { "kind": KIND, "id": resource.uid.id, "attr": attrs(resource) },
        }],
    }))
}

/// The decision in a `CheckResources` answer: `Some(true)` for
/// `EFFECT_ALLOW`, `Some(false)` for `EFFECT_DENY`, `None` if absent.
pub fn decision(answer: &serde_json::Value, action: &str) -> Option<bool> {
    let effect = answer
        .get("results")?
        .get(0)?
        .get("actions")?
        .get(action)?
        .as_str()?;
    match effect {
        "EFFECT_ALLOW" => Some(true),
        "EFFECT_DENY" => Some(false),
        _ => None,
    }
}
