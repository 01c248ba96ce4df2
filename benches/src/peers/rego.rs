//! The generated bundle in Rego, and the regorus engine that decides it.
//!
//! Each Cedar policy becomes one rule body that adds the policy's id to
//! `forbids` or `permits`; `allow` holds when `forbids` is empty and
//! `permits` is not, which is Cedar's rule. The data document holds every
//! entity once, with the set of entities it is `in` (itself and its
//! transitive ancestors, which Cedar also computes once at load), so
//! `principal in Role::"r"` is one lookup: `principal.anc["Saas::Role::r"]`.
//!
//! The generated schema has no action groups, so `action in [a, b]` is
//! membership in `{a, b}`. The requests carry the principal's and
//! resource's types, so `principal is Saas::User` is checked as Cedar
//! checks it, from the uid.

use std::fmt::Write as _;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::RegoVM;

use super::model::{EntityFacts, WorkloadRequest, key, keyed_attrs};
use crate::generator::{GeneratedPolicy, PolicySpec};

/// The rule every decision evaluates.
pub const ALLOW_RULE: &str = "data.cedar.allow";
/// The rules that collect the satisfied policies' ids.
pub const FORBIDS_RULE: &str = "data.cedar.forbids";
/// See [`FORBIDS_RULE`].
pub const PERMITS_RULE: &str = "data.cedar.permits";

/// What regorus said when it would not load or decide.
#[derive(Debug, thiserror::Error)]
#[error("regorus: {0}")]
pub struct RegoError(String);

impl RegoError {
    fn from_regorus(err: impl std::fmt::Display) -> Self {
        Self(err.to_string())
    }
}

fn action(name: &str) -> String {
    format!("\"Saas::Action::{name}\"")
}

fn entity(kind: &str, id: &str) -> String {
    format!("\"Saas::{kind}::{id}\"")
}

/// Policies per module file, which keeps every file well inside regorus's
/// default limits on a policy file (1 MiB, 20,000 lines).
pub const POLICIES_PER_MODULE: usize = 1_000;

/// One Rego source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Its file name.
    pub name: String,
    /// Its text.
    pub text: String,
}

const HEADER: &str = "package cedar\n\nimport rego.v1\n";

/// The bundle as Rego modules of `package cedar`: `cedar.rego` holds the
/// decision rule, and `policies-NNN.rego` files hold the policies, at most
/// [`POLICIES_PER_MODULE`] each. Rules of one package may span files.
pub fn policy_modules(policies: &[GeneratedPolicy]) -> Vec<Module> {
    let decision = format!(
        "{HEADER}\n\
         # The request's entities; `anc` is the set each is `in`.\n\
         principal := data.entities[input.principal]\n\n\
         resource := data.entities[input.resource]\n\n\
         # Cedar: a satisfied forbid denies; else a satisfied permit allows; else deny.\n\
         default allow := false\n\n\
         allow if {{\n\tcount(forbids) == 0\n\tcount(permits) > 0\n}}\n\n\
         # Both sets exist even when no policy of one effect does.\n\
         forbids contains \"\" if false\n\n\
         permits contains \"\" if false\n"
    );
    let mut modules = vec![Module {
        name: "cedar.rego".to_owned(),
        text: decision,
    }];
    for (index, chunk) in policies.chunks(POLICIES_PER_MODULE).enumerate() {
        let mut text = HEADER.to_owned();
        for policy in chunk {
            let set = if policy.forbid { "forbids" } else { "permits" };
            let _ = write!(
                text,
                "\n# {}\n{set} contains \"{}\" if {{\n",
                policy.id, policy.id
            );
            for line in body(&policy.spec) {
                let _ = writeln!(text, "\t{line}");
            }
            text.push_str("}\n");
        }
        modules.push(Module {
            name: format!("policies-{index:03}.rego"),
            text,
        });
    }
    modules
}

/// The statements of one policy's rule, cheapest first.
fn body(spec: &PolicySpec) -> Vec<String> {
    let user_and_doc = [
        "input.principal_type == \"Saas::User\"".to_owned(),
        "input.resource_type == \"Saas::Doc\"".to_owned(),
    ];
    match spec {
        PolicySpec::RoleFolderAction {
            role,
            action: name,
            folder,
            min_hour,
        } => vec![
            format!("input.action == {}", action(name)),
            format!("principal.anc[{}]", entity("Role", role)),
            format!("resource.anc[{}]", entity("Folder", folder)),
            format!("input.context.hour >= {min_hour}"),
        ],
        PolicySpec::RoleTenantReadComment { role, tenant } => vec![
            format!(
                "input.action in {{{}, {}}}",
                action("read"),
                action("comment")
            ),
            format!("principal.anc[{}]", entity("Role", role)),
            format!("resource.anc[{}]", entity("Tenant", tenant)),
        ],
        PolicySpec::UserOutranksDoc { user, tenant } => vec![
            format!("input.principal == {}", entity("User", user)),
            format!("resource.anc[{}]", entity("Tenant", tenant)),
            "principal.attrs.level > resource.attrs.level".to_owned(),
        ],
        PolicySpec::FolderNeedsMfa { folder } => vec![
            format!(
                "input.action in {{{}, {}}}",
                action("delete"),
                action("admin")
            ),
            format!("resource.anc[{}]", entity("Folder", folder)),
            "not input.context.mfa".to_owned(),
        ],
        PolicySpec::RoleNoNightExport { role } => vec![
            format!("input.action == {}", action("export")),
            format!("principal.anc[{}]", entity("Role", role)),
            "input.context.hour < 6".to_owned(),
        ],
        PolicySpec::TenantPublicRead { tenant, after_hour } => {
            let mut lines = vec![format!("input.action == {}", action("read"))];
            lines.extend(user_and_doc);
            lines.extend([
                format!("principal.anc[{}]", entity("Tenant", tenant)),
                format!("resource.anc[{}]", entity("Tenant", tenant)),
                "resource.attrs.public == true".to_owned(),
                format!("input.context.hour > {after_hour}"),
            ]);
            lines
        }
        PolicySpec::TenantNoWriteAbove { tenant } => {
            let mut lines = vec![format!(
                "input.action in {{{}, {}}}",
                action("write"),
                action("share")
            )];
            lines.extend(user_and_doc);
            lines.extend([
                format!("principal.anc[{}]", entity("Tenant", tenant)),
                format!("resource.anc[{}]", entity("Tenant", tenant)),
                "resource.attrs.level > principal.attrs.level + 1".to_owned(),
            ]);
            lines
        }
        PolicySpec::CrossTenantGuard { min_level } => {
            let mut lines = user_and_doc.to_vec();
            lines.extend([
                "resource.attrs.tenant != principal.attrs.tenant".to_owned(),
                format!("resource.attrs.level > {min_level}"),
            ]);
            lines
        }
        PolicySpec::SeniorAudit => vec![
            format!("input.action == {}", action("audit")),
            "principal.attrs.level >= 4".to_owned(),
        ],
        PolicySpec::MaintenanceWindow => vec![
            format!("input.action == {}", action("delete")),
            "input.context.hour < 2".to_owned(),
        ],
    }
}

/// The data document: `{"entities": {key: {"anc": {key: true}, "attrs"}}}`,
/// entity references in attributes replaced by their keys.
pub fn data_document(entities: &[EntityFacts]) -> serde_json::Value {
    let entities: serde_json::Map<String, serde_json::Value> = entities
        .iter()
        .map(|entity| {
            let anc: serde_json::Map<String, serde_json::Value> = std::iter::once(&entity.uid)
                .chain(&entity.ancestors)
                .map(|uid| (key(uid), serde_json::Value::Bool(true)))
                .collect();
            let attrs = keyed_attrs(entity);
            (
                key(&entity.uid),
                serde_json::json!({ "anc": anc, "attrs": attrs }),
            )
        })
        .collect();
    serde_json::json!({ "entities": entities })
}

/// One request as the Rego input document.
pub fn input(request: &WorkloadRequest) -> serde_json::Value {
    serde_json::json!({
        "principal": key(&request.principal),
        "principal_type": request.principal.type_name,
        "action": key(&request.action),
        "resource": key(&request.resource),
        "resource_type": request.resource.type_name,
        "context": { "hour": request.context.hour, "mfa": request.context.mfa },
    })
}

/// A regorus interpreter with the module and the data document loaded.
pub fn interpreter(
    policies: &[GeneratedPolicy],
    entities: &[EntityFacts],
) -> Result<regorus::Engine, RegoError> {
    interpreter_from_modules(&policy_modules(policies), &data_document(entities))
}

/// [`interpreter`] from modules and a data document already rendered.
pub fn interpreter_from_modules(
    modules: &[Module],
    data: &serde_json::Value,
) -> Result<regorus::Engine, RegoError> {
    let mut engine = regorus::Engine::new();
    for module in modules {
        engine
            .add_policy(module.name.clone(), module.text.clone())
            .map_err(RegoError::from_regorus)?;
    }
    engine
        .add_data(regorus::Value::from(data.clone()))
        .map_err(RegoError::from_regorus)?;
    Ok(engine)
}

/// Sets the input and evaluates `allow` with the interpreter.
pub fn decide(engine: &mut regorus::Engine, input: &regorus::Value) -> Result<bool, RegoError> {
    engine.set_input(input.clone());
    let allow = engine
        .eval_rule(ALLOW_RULE.to_owned())
        .map_err(RegoError::from_regorus)?;
    allow.as_bool().copied().map_err(RegoError::from_regorus)
}

/// The ids of the satisfied forbids and permits, sorted, for the checks.
pub fn satisfied(
    engine: &mut regorus::Engine,
    input: &regorus::Value,
) -> Result<(Vec<String>, Vec<String>), RegoError> {
    engine.set_input(input.clone());
    let mut ids = |rule: &str| -> Result<Vec<String>, RegoError> {
        let set = engine
            .eval_rule(rule.to_owned())
            .map_err(RegoError::from_regorus)?;
        let set = set.as_set().map_err(RegoError::from_regorus)?;
        let mut ids = set
            .iter()
            .map(|id| id.as_string().map(|id| id.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RegoError::from_regorus)?;
        ids.retain(|id| !id.is_empty());
        ids.sort();
        Ok(ids)
    };
    let forbids = ids(FORBIDS_RULE)?;
    let permits = ids(PERMITS_RULE)?;
    Ok((forbids, permits))
}

/// The same module compiled to regorus's bytecode VM, with the data set.
pub fn virtual_machine(
    engine: &mut regorus::Engine,
    data: &serde_json::Value,
) -> Result<RegoVM, RegoError> {
    let compiled = engine
        .compile_with_entrypoint(&regorus::Rc::from(ALLOW_RULE))
        .map_err(RegoError::from_regorus)?;
    let program =
        Compiler::compile_from_policy(&compiled, &[ALLOW_RULE]).map_err(RegoError::from_regorus)?;
    let mut vm = RegoVM::new();
    vm.load_program(program);
    // A 10,000-policy module runs more instructions than the default cap.
    vm.set_max_instructions(usize::MAX);
    vm.set_data(regorus::Value::from(data.clone()))
        .map_err(RegoError::from_regorus)?;
    Ok(vm)
}

/// Sets the input and runs `allow` on the VM.
pub fn decide_vm(vm: &mut RegoVM, input: &regorus::Value) -> Result<bool, RegoError> {
    vm.set_input(input.clone());
    let allow = vm.execute().map_err(RegoError::from_regorus)?;
    allow.as_bool().copied().map_err(RegoError::from_regorus)
}

/// What Cedar would name as the determining policies: the satisfied
/// forbids on a deny with any, else the satisfied permits on an allow.
pub fn determining(allowed: bool, forbids: Vec<String>, permits: Vec<String>) -> Vec<String> {
    if allowed {
        permits
    } else if forbids.is_empty() {
        Vec::new()
    } else {
        forbids
    }
}
