//! The cedar-edge core, exported as a WebAssembly component.
//!
//! This crate only translates between the WIT types of `wit/authz.wit` and
//! the core's own types; every decision is made by `cedar-edge-core`, the
//! same code the native backend runs.

use cedar_edge_core as engine;

/// The generated bindings. They need `unsafe` for the canonical ABI, so
/// they live apart from the translation code, which does not.
#[allow(unsafe_code, missing_debug_implementations)]
mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy-engine",
    });

    use super::PolicyEngine;
    export!(PolicyEngine);
}

use bindings::cedar_edge::authz::types as wit;
use bindings::exports::cedar_edge::authz::authorizer::{self, GuestBundle};

/// The component's export table.
struct PolicyEngine;

impl authorizer::Guest for PolicyEngine {
    type Bundle = LoadedBundle;
}

/// A bundle held by one instance.
struct LoadedBundle {
    bundle: engine::Bundle,
}

impl GuestBundle for LoadedBundle {
    fn load(
        source: wit::BundleSource,
        limits: wit::RequestLimits,
    ) -> Result<authorizer::Bundle, Vec<wit::Diagnostic>> {
        let source = engine::BundleSource {
            policies: source.policies.into_iter().map(bundle_file).collect(),
            schema: source.schema.map(bundle_file),
            entities: source.entities.map(bundle_file),
            template_links: source.template_links.map(bundle_file),
            prepared_schema_json: source.prepared_schema_json,
            settings: engine::BundleSettings {
                validation: match source.validation {
                    wit::ValidationMode::Strict => engine::ValidationMode::Strict,
                    wit::ValidationMode::Permissive => engine::ValidationMode::Permissive,
                    wit::ValidationMode::None => engine::ValidationMode::None,
                },
                cedar_version: source.cedar_version,
            },
        };
        let limits = engine::RequestLimits {
            max_context_bytes: limits.max_context_bytes,
            max_depth: limits.max_depth,
            max_nodes: limits.max_nodes,
        };
        match engine::Bundle::load(&source, limits) {
            Ok(bundle) => Ok(authorizer::Bundle::new(Self { bundle })),
            Err(err) => Err(err.diagnostics.into_iter().map(diagnostic).collect()),
        }
    }

    fn id(&self) -> String {
        self.bundle.id().to_owned()
    }

    fn policy_ids(&self) -> Vec<String> {
        self.bundle.policy_ids().to_vec()
    }

    fn authorize(&self, request: wit::Request) -> Result<wit::Response, wit::RequestError> {
        self.bundle
            .authorize(&core_request(request))
            .map(response)
            .map_err(request_error)
    }

    fn authorize_batch(
        &self,
        requests: Vec<wit::Request>,
    ) -> Vec<Result<wit::Response, wit::RequestError>> {
        requests
            .into_iter()
            .map(|request| self.authorize(request))
            .collect()
    }
}

fn bundle_file(file: wit::BundleFile) -> engine::BundleFile {
    engine::BundleFile {
        path: file.path,
        contents: file.contents,
    }
}

fn diagnostic(found: engine::Diagnostic) -> wit::Diagnostic {
    wit::Diagnostic {
        file: found.file,
        line: found.line,
        column: found.column,
        offset: found.offset,
        length: found.length,
        message: found.message,
        help: found.help,
    }
}

fn uid(uid: wit::EntityUid) -> engine::EntityUid {
    engine::EntityUid {
        type_name: uid.type_name,
        id: uid.id,
    }
}

fn attributes(attributes: wit::Attributes) -> engine::Attributes {
    let nodes = attributes
        .nodes
        .into_iter()
        .map(|node| match node {
            wit::ValueNode::Boolean(b) => engine::ValueNode::Bool(b),
            wit::ValueNode::Long(n) => engine::ValueNode::Long(n),
            wit::ValueNode::String(s) => engine::ValueNode::String(s),
            wit::ValueNode::Entity(entity) => engine::ValueNode::Entity(uid(entity)),
            wit::ValueNode::Extension((kind, arg)) => engine::ValueNode::Extension(
                match kind {
                    wit::ExtensionKind::Ip => engine::ExtensionKind::Ip,
                    wit::ExtensionKind::Decimal => engine::ExtensionKind::Decimal,
                    wit::ExtensionKind::Datetime => engine::ExtensionKind::Datetime,
                    wit::ExtensionKind::Duration => engine::ExtensionKind::Duration,
                },
                arg,
            ),
            wit::ValueNode::ExtensionCall((name, args)) => {
                engine::ValueNode::ExtensionCall(name, args)
            }
            wit::ValueNode::Set(children) => engine::ValueNode::Set(children),
            wit::ValueNode::Record(fields) => engine::ValueNode::Record(fields),
        })
        .collect();
    engine::Attributes {
        nodes,
        fields: attributes.fields,
    }
}

fn core_request(request: wit::Request) -> engine::Request {
    engine::Request {
        principal: uid(request.principal),
        action: uid(request.action),
        resource: uid(request.resource),
        context: match request.context {
            wit::Context::Typed(typed) => engine::ContextInput::Typed(attributes(typed)),
            wit::Context::Json(json) => engine::ContextInput::Json(json),
        },
        entities: request
            .entities
            .into_iter()
            .map(|entity| engine::EntityInput {
                uid: uid(entity.uid),
                attrs: attributes(entity.attrs),
                parents: entity.parents.into_iter().map(uid).collect(),
                tags: attributes(entity.tags),
            })
            .collect(),
    }
}

fn response(response: engine::Response) -> wit::Response {
    wit::Response {
        decision: match response.decision {
            engine::Decision::Allow => wit::Decision::Allow,
            engine::Decision::Deny => wit::Decision::Deny,
        },
        determining_policies: response.determining_policies,
        errors: response
            .errors
            .into_iter()
            .map(|err| wit::PolicyError {
                policy_id: err.policy_id,
                message: err.message,
            })
            .collect(),
        bundle_id: response.bundle_id,
    }
}

fn request_error(err: engine::RequestError) -> wit::RequestError {
    match err {
        engine::RequestError::Invalid { field, message } => {
            wit::RequestError::Invalid(wit::FieldError { field, message })
        }
        engine::RequestError::LimitExceeded { field, message } => {
            wit::RequestError::LimitExceeded(wit::FieldError { field, message })
        }
    }
}
