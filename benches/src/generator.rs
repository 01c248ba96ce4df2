//! Realistic large bundles: many tenants, each with roles, users, folders
//! and documents, and a policy mix of scoped and unscoped permits, `when`
//! and `unless` conditions, and forbids. The generated requests hit both
//! permits and forbids. Deterministic for a given size and seed.
//!
//! Policies are generated as [`PolicySpec`] values first and rendered to
//! Cedar from there, so the same model can be translated for other engines
//! (`benches/scripts/peers`) without parsing Cedar.
//!
//! The shape follows a multi-tenant SaaS bundle: almost every policy belongs
//! to one tenant and is scoped to that tenant's roles, users, folders or the
//! tenant itself, and a fixed handful of global rules (a cross-tenant guard,
//! an auditor rule, a maintenance window) are unscoped. The unscoped share
//! therefore shrinks as the bundle grows, as it does in real deployments.

use cedar_edge_core::{
    Attributes, BundleFile, BundleSource, ContextInput, EntityInput, EntityUid, Request, Value,
};
use serde::Serialize;
use serde_json::json;

/// The actions of the generated schema.
pub const ACTIONS: [&str; 8] = [
    "read", "write", "delete", "share", "comment", "export", "admin", "audit",
];
/// Roles per tenant.
pub const ROLES_PER_TENANT: usize = 4;
/// Users per tenant.
pub const USERS_PER_TENANT: usize = 6;
/// Folders per tenant.
pub const FOLDERS_PER_TENANT: usize = 4;
/// Documents per folder.
pub const DOCS_PER_FOLDER: usize = 3;
/// Tenant policies per tenant: the tenant count grows with the bundle.
const POLICIES_PER_TENANT: usize = 25;

/// The generated bundle's schema, in Cedar syntax.
pub const SCHEMA: &str = r#"namespace Saas {
  type Ctx = { hour: Long, mfa: Bool };
  entity Tenant;
  entity Role in [Tenant];
  entity User in [Role] { tenant: Tenant, level: Long };
  entity Folder in [Tenant];
  entity Doc in [Folder] { tenant: Tenant, public: Bool, level: Long };
  action "read", "write", "delete", "share", "comment", "export", "admin", "audit" appliesTo {
    principal: [User], resource: [Doc], context: Ctx,
  };
}
"#;

/// A small deterministic generator (SplitMix64), so that benchmarks and
/// tests see the same bundle for the same seed without a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number below `bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % bound.max(1) as u64) as usize
    }
}

/// One generated policy, before it is rendered to any language. Entity
/// fields are plain ids (`t3-r1`); their types follow from the variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PolicySpec {
    /// `permit (principal in Role, action == A, resource in Folder) when { context.hour >= H }`
    RoleFolderAction {
        role: String,
        action: String,
        folder: String,
        min_hour: usize,
    },
    /// `permit (principal in Role, action in [read, comment], resource in Tenant)`
    RoleTenantReadComment { role: String, tenant: String },
    /// `permit (principal == User, action, resource in Tenant) when { principal.level > resource.level }`
    UserOutranksDoc { user: String, tenant: String },
    /// `forbid (principal, action in [delete, admin], resource in Folder) unless { context.mfa }`
    FolderNeedsMfa { folder: String },
    /// `forbid (principal in Role, action == export, resource) when { context.hour < 6 }`
    RoleNoNightExport { role: String },
    /// `permit (principal is User in Tenant, action == read, resource is Doc in Tenant) when { resource.public && context.hour > H }`
    TenantPublicRead { tenant: String, after_hour: usize },
    /// `forbid (principal is User in Tenant, action in [write, share], resource is Doc in Tenant) when { resource.level > principal.level + 1 }`
    TenantNoWriteAbove { tenant: String },
    /// Global: `forbid (principal is User, action, resource is Doc) when { resource.tenant != principal.tenant && resource.level > L }`
    CrossTenantGuard { min_level: usize },
    /// Global: `permit (principal, action == audit, resource) when { principal.level >= 4 }`
    SeniorAudit,
    /// Global: `forbid (principal, action == delete, resource) when { context.hour < 2 }`
    MaintenanceWindow,
}

/// A policy with its id and effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeneratedPolicy {
    /// The `@id` annotation.
    pub id: String,
    /// Whether it forbids.
    pub forbid: bool,
    /// What it says.
    pub spec: PolicySpec,
}

/// A generated bundle and what requests against it need to know.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The bundle.
    pub source: BundleSource,
    /// How many tenants it has.
    pub tenants: usize,
    /// The policies, in bundle order.
    pub policies: Vec<GeneratedPolicy>,
}

/// How many of a bundle's policies are global (unscoped) rules.
const GLOBAL_POLICIES: usize = 3;

/// A bundle with exactly `policies` policies (at least one).
pub fn bundle(policies: usize, seed: u64) -> Generated {
    bundle_with_docs(policies, seed, None)
}

/// The same bundle with `docs` documents in all (`None`: three per folder),
/// spread evenly over the folders: the store a search enumerates.
pub fn bundle_with_docs(policies: usize, seed: u64, docs: Option<usize>) -> Generated {
    let policies = policies.max(1);
    let globals = GLOBAL_POLICIES.min(policies);
    let tenant_policies = policies - globals;
    let tenants = tenant_policies.div_ceil(POLICIES_PER_TENANT).max(1);
    let mut rng = Rng::new(seed);
    let mut specs: Vec<PolicySpec> = Vec::with_capacity(policies);
    specs.extend(
        [
            PolicySpec::CrossTenantGuard {
                min_level: 1 + rng.below(3),
            },
            PolicySpec::SeniorAudit,
            PolicySpec::MaintenanceWindow,
        ]
        .into_iter()
        .take(globals),
    );
    for index in 0..tenant_policies {
        specs.push(tenant_policy(
            index % POLICIES_PER_TENANT,
            index / POLICIES_PER_TENANT,
            &mut rng,
        ));
    }
    let policies: Vec<GeneratedPolicy> = specs
        .into_iter()
        .enumerate()
        .map(|(index, spec)| GeneratedPolicy {
            id: format!("p{index}"),
            forbid: spec.is_forbid(),
            spec,
        })
        .collect();
    let text: String = policies.iter().map(GeneratedPolicy::to_cedar).collect();
    Generated {
        source: BundleSource {
            policies: vec![BundleFile {
                path: "generated.cedar".to_owned(),
                contents: text,
            }],
            schema: Some(BundleFile {
                path: "saas.cedarschema".to_owned(),
                contents: SCHEMA.to_owned(),
            }),
            entities: Some(BundleFile {
                path: "entities.json".to_owned(),
                contents: entities(tenants, docs, &mut rng),
            }),
            template_links: None,
            prepared_schema_json: None,
            settings: Default::default(),
        },
        tenants,
        policies,
    }
}

fn any_action(rng: &mut Rng) -> &'static str {
    ACTIONS
        .get(rng.below(ACTIONS.len()))
        .copied()
        .unwrap_or("read")
}

/// The `slot`-th policy of tenant `tenant`: the kinds cycle so that every
/// tenant gets the whole mix.
fn tenant_policy(slot: usize, tenant: usize, rng: &mut Rng) -> PolicySpec {
    let role = format!("t{tenant}-r{}", rng.below(ROLES_PER_TENANT));
    let folder = format!("t{tenant}-f{}", rng.below(FOLDERS_PER_TENANT));
    let user = format!("t{tenant}-u{}", rng.below(USERS_PER_TENANT));
    let tenant = format!("t{tenant}");
    match slot % 10 {
        0..=3 => PolicySpec::RoleFolderAction {
            role,
            action: any_action(rng).to_owned(),
            folder,
            min_hour: rng.below(24),
        },
        4 => PolicySpec::RoleTenantReadComment { role, tenant },
        5 => PolicySpec::UserOutranksDoc { user, tenant },
        6 => PolicySpec::FolderNeedsMfa { folder },
        7 => PolicySpec::RoleNoNightExport { role },
        8 => PolicySpec::TenantPublicRead {
            tenant,
            after_hour: rng.below(24),
        },
        _ => PolicySpec::TenantNoWriteAbove { tenant },
    }
}

impl PolicySpec {
    /// Whether the policy forbids.
    pub fn is_forbid(&self) -> bool {
        matches!(
            self,
            Self::FolderNeedsMfa { .. }
                | Self::RoleNoNightExport { .. }
                | Self::TenantNoWriteAbove { .. }
                | Self::CrossTenantGuard { .. }
                | Self::MaintenanceWindow
        )
    }
}

fn saas(kind: &str, id: &str) -> String {
    format!("Saas::{kind}::\"{id}\"")
}

fn act(name: &str) -> String {
    saas("Action", name)
}

impl GeneratedPolicy {
    /// The policy in Cedar syntax, with its `@id`.
    pub fn to_cedar(&self) -> String {
        let body = match &self.spec {
            PolicySpec::RoleFolderAction {
                role,
                action,
                folder,
                min_hour,
            } => format!(
                "permit (principal in {}, action == {}, resource in {})\nwhen {{ context.hour >= {min_hour} }};",
                saas("Role", role),
                act(action),
                saas("Folder", folder)
            ),
            PolicySpec::RoleTenantReadComment { role, tenant } => format!(
                "permit (principal in {}, action in [{}, {}], resource in {});",
                saas("Role", role),
                act("read"),
                act("comment"),
                saas("Tenant", tenant)
            ),
            PolicySpec::UserOutranksDoc { user, tenant } => format!(
                "permit (principal == {}, action, resource in {})\nwhen {{ principal.level > resource.level }};",
                saas("User", user),
                saas("Tenant", tenant)
            ),
            PolicySpec::FolderNeedsMfa { folder } => format!(
                "forbid (principal, action in [{}, {}], resource in {})\nunless {{ context.mfa }};",
                act("delete"),
                act("admin"),
                saas("Folder", folder)
            ),
            PolicySpec::RoleNoNightExport { role } => format!(
                "forbid (principal in {}, action == {}, resource)\nwhen {{ context.hour < 6 }};",
                saas("Role", role),
                act("export")
            ),
            PolicySpec::TenantPublicRead { tenant, after_hour } => format!(
                "permit (principal is Saas::User in {t}, action == {}, resource is Saas::Doc in {t})\nwhen {{ resource.public && context.hour > {after_hour} }};",
                act("read"),
                t = saas("Tenant", tenant)
            ),
            PolicySpec::TenantNoWriteAbove { tenant } => format!(
                "forbid (principal is Saas::User in {t}, action in [{}, {}], resource is Saas::Doc in {t})\nwhen {{ resource.level > principal.level + 1 }};",
                act("write"),
                act("share"),
                t = saas("Tenant", tenant)
            ),
            PolicySpec::CrossTenantGuard { min_level } => format!(
                "forbid (principal is Saas::User, action, resource is Saas::Doc)\nwhen {{ resource.tenant != principal.tenant && resource.level > {min_level} }};"
            ),
            PolicySpec::SeniorAudit => format!(
                "permit (principal, action == {}, resource)\nwhen {{ principal.level >= 4 }};",
                act("audit")
            ),
            PolicySpec::MaintenanceWindow => format!(
                "forbid (principal, action == {}, resource)\nwhen {{ context.hour < 2 }};",
                act("delete")
            ),
        };
        format!("@id(\"{}\")\n{body}\n\n", self.id)
    }
}

fn uid(kind: &str, id: String) -> serde_json::Value {
    json!({"type": format!("Saas::{kind}"), "id": id})
}

fn entities(tenants: usize, docs: Option<usize>, rng: &mut Rng) -> String {
    let folders = tenants * FOLDERS_PER_TENANT;
    // The first `docs % folders` folders take one document more.
    let docs_in = |folder: usize| {
        docs.map_or(DOCS_PER_FOLDER, |docs| {
            docs / folders + usize::from(folder < docs % folders)
        })
    };
    let mut all = Vec::new();
    for t in 0..tenants {
        all.push(json!({"uid": uid("Tenant", format!("t{t}")), "attrs": {}, "parents": []}));
        for r in 0..ROLES_PER_TENANT {
            all.push(json!({"uid": uid("Role", format!("t{t}-r{r}")), "attrs": {}, "parents": [uid("Tenant", format!("t{t}"))]}));
        }
        for u in 0..USERS_PER_TENANT {
            let roles: Vec<_> = (0..1 + rng.below(2))
                .map(|_| uid("Role", format!("t{t}-r{}", rng.below(ROLES_PER_TENANT))))
                .collect();
            all.push(json!({"uid": uid("User", format!("t{t}-u{u}")),
                            "attrs": {"tenant": {"__entity": uid("Tenant", format!("t{t}"))}, "level": rng.below(5)},
                            "parents": roles}));
        }
        for f in 0..FOLDERS_PER_TENANT {
            all.push(json!({"uid": uid("Folder", format!("t{t}-f{f}")), "attrs": {}, "parents": [uid("Tenant", format!("t{t}"))]}));
            for d in 0..docs_in(t * FOLDERS_PER_TENANT + f) {
                all.push(json!({"uid": uid("Doc", format!("t{t}-f{f}-d{d}")),
                                "attrs": {"tenant": {"__entity": uid("Tenant", format!("t{t}"))},
                                          "public": rng.below(3) == 0, "level": rng.below(5)},
                                "parents": [uid("Folder", format!("t{t}-f{f}"))]}));
            }
        }
    }
    serde_json::Value::Array(all).to_string()
}

/// A request against a generated bundle: mostly within one tenant, some
/// across tenants, at all hours, with and without MFA.
pub fn request(tenants: usize, rng: &mut Rng) -> Request {
    let tenant = rng.below(tenants);
    let other = if rng.below(5) == 0 {
        rng.below(tenants)
    } else {
        tenant
    };
    let context = Attributes::from_fields([
        ("hour".to_owned(), Value::Long(rng.below(24) as i64)),
        ("mfa".to_owned(), Value::Bool(rng.below(2) == 0)),
    ]);
    Request {
        principal: EntityUid::new(
            "Saas::User",
            format!("t{tenant}-u{}", rng.below(USERS_PER_TENANT)),
        ),
        action: EntityUid::new("Saas::Action", any_action(rng)),
        resource: EntityUid::new(
            "Saas::Doc",
            format!(
                "t{other}-f{}-d{}",
                rng.below(FOLDERS_PER_TENANT),
                rng.below(DOCS_PER_FOLDER)
            ),
        ),
        context: ContextInput::Typed(context),
        entities: Vec::new(),
    }
}

/// A principal built from token claims, as the gateway does: a user the
/// bundle does not hold, in one of a tenant's roles; and sometimes a
/// freshly uploaded document too. Returns the request and the same
/// entities in Cedar's JSON, for the plain reference.
pub fn with_claims_entities(
    mut request: Request,
    n: usize,
    rng: &mut Rng,
) -> (Request, serde_json::Value) {
    let tenant = request
        .principal
        .id
        .split('-')
        .next()
        .unwrap_or("t0")
        .to_owned();
    let role = format!("{tenant}-r{}", rng.below(ROLES_PER_TENANT));
    let level = rng.below(5) as i64;
    let user = EntityUid::new("Saas::User", format!("claims-{n}"));
    let mut json = vec![serde_json::json!({
        "uid": {"type": "Saas::User", "id": user.id},
        "attrs": {"tenant": {"__entity": {"type": "Saas::Tenant", "id": tenant}}, "level": level},
        "parents": [{"type": "Saas::Role", "id": role}],
    })];
    request.entities.push(EntityInput {
        uid: user.clone(),
        attrs: Attributes::from_fields([
            (
                "tenant".to_owned(),
                Value::Entity(EntityUid::new("Saas::Tenant", tenant.clone())),
            ),
            ("level".to_owned(), Value::Long(level)),
        ]),
        parents: vec![EntityUid::new("Saas::Role", role)],
        tags: Attributes::default(),
    });
    request.principal = user;
    if rng.below(2) == 0 {
        let folder = format!("{tenant}-f{}", rng.below(FOLDERS_PER_TENANT));
        let (public, level) = (rng.below(2) == 0, rng.below(5) as i64);
        let doc = EntityUid::new("Saas::Doc", format!("upload-{n}"));
        json.push(serde_json::json!({
            "uid": {"type": "Saas::Doc", "id": doc.id},
            "attrs": {"tenant": {"__entity": {"type": "Saas::Tenant", "id": tenant}},
                      "public": public, "level": level},
            "parents": [{"type": "Saas::Folder", "id": folder}],
        }));
        request.entities.push(EntityInput {
            uid: doc.clone(),
            attrs: Attributes::from_fields([
                (
                    "tenant".to_owned(),
                    Value::Entity(EntityUid::new("Saas::Tenant", tenant)),
                ),
                ("public".to_owned(), Value::Bool(public)),
                ("level".to_owned(), Value::Long(level)),
            ]),
            parents: vec![EntityUid::new("Saas::Folder", folder)],
            tags: Attributes::default(),
        });
        request.resource = doc;
    }
    (request, serde_json::Value::Array(json))
}
