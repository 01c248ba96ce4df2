//! Realistic large bundles: many tenants, each with roles, users, folders
//! and documents, and a policy mix of scoped and unscoped permits, `when`
//! and `unless` conditions, and forbids. The generated requests hit both
//! permits and forbids. Deterministic for a given size and seed.

use cedar_edge_engine::{
    Attributes, BundleFile, BundleSource, ContextInput, EntityUid, Request, Value,
};
use serde_json::json;

const ACTIONS: [&str; 8] = [
    "read", "write", "delete", "share", "comment", "export", "admin", "audit",
];
const ROLES_PER_TENANT: usize = 4;
const USERS_PER_TENANT: usize = 6;
const FOLDERS_PER_TENANT: usize = 4;
const DOCS_PER_FOLDER: usize = 3;
/// Policies per tenant: the tenant count grows with the bundle.
const POLICIES_PER_TENANT: usize = 25;

const SCHEMA: &str = r#"namespace Saas {
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

/// A generated bundle and requests against it.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The bundle.
    pub source: BundleSource,
    /// How many tenants it has.
    pub tenants: usize,
}

/// A bundle with exactly `policies` policies.
pub fn bundle(policies: usize, seed: u64) -> Generated {
    let tenants = policies.div_ceil(POLICIES_PER_TENANT).max(1);
    let mut rng = Rng::new(seed);
    let mut text = String::new();
    for index in 0..policies {
        let tenant = index % tenants;
        text.push_str(&policy(index, tenant, &mut rng));
    }
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
                contents: entities(tenants, &mut rng),
            }),
            template_links: None,
            prepared_schema_json: None,
        },
        tenants,
    }
}

fn any_action(rng: &mut Rng) -> &'static str {
    ACTIONS
        .get(rng.below(ACTIONS.len()))
        .copied()
        .unwrap_or("read")
}

fn policy(index: usize, tenant: usize, rng: &mut Rng) -> String {
    let action = any_action(rng);
    let role = format!("Saas::Role::\"t{tenant}-r{}\"", rng.below(ROLES_PER_TENANT));
    let folder = format!(
        "Saas::Folder::\"t{tenant}-f{}\"",
        rng.below(FOLDERS_PER_TENANT)
    );
    let user = format!("Saas::User::\"t{tenant}-u{}\"", rng.below(USERS_PER_TENANT));
    let hour = rng.below(24);
    let body = match index % 10 {
        0..=3 => format!(
            "permit (principal in {role}, action == Saas::Action::\"{action}\", resource in {folder})\nwhen {{ context.hour >= {hour} }};"
        ),
        4 => format!(
            "permit (principal in {role}, action in [Saas::Action::\"read\", Saas::Action::\"comment\"], resource in Saas::Tenant::\"t{tenant}\");"
        ),
        5 => format!(
            "permit (principal == {user}, action, resource in Saas::Tenant::\"t{tenant}\")\nwhen {{ principal.level > resource.level }};"
        ),
        6 => format!(
            "forbid (principal, action in [Saas::Action::\"delete\", Saas::Action::\"admin\"], resource in {folder})\nunless {{ context.mfa }};"
        ),
        7 => format!(
            "forbid (principal in {role}, action == Saas::Action::\"export\", resource)\nwhen {{ context.hour < 6 }};"
        ),
        8 => format!(
            "permit (principal is Saas::User, action == Saas::Action::\"read\", resource is Saas::Doc)\nwhen {{ resource.public && resource.tenant == principal.tenant && context.hour > {hour} }};"
        ),
        _ => format!(
            "forbid (principal is Saas::User, action, resource is Saas::Doc)\nwhen {{ resource.tenant != principal.tenant && resource.level > {} }};",
            rng.below(5)
        ),
    };
    format!("@id(\"p{index}\")\n{body}\n\n")
}

fn uid(kind: &str, id: String) -> serde_json::Value {
    json!({"type": format!("Saas::{kind}"), "id": id})
}

fn entities(tenants: usize, rng: &mut Rng) -> String {
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
            for d in 0..DOCS_PER_FOLDER {
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
