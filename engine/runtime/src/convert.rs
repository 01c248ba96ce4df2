//! Translation between the core's types and the host bindings' WIT types.

use cedar_edge_core as engine;

use crate::bindings::wit;

pub(crate) fn bundle_source(source: &engine::BundleSource) -> wit::BundleSource {
    let file = |file: &engine::BundleFile| wit::BundleFile {
        path: file.path.clone(),
        contents: file.contents.clone(),
    };
    wit::BundleSource {
        policies: source.policies.iter().map(file).collect(),
        schema: source.schema.as_ref().map(file),
        entities: source.entities.as_ref().map(file),
        template_links: source.template_links.as_ref().map(file),
        prepared_schema_json: source.prepared_schema_json.clone(),
        validation: match source.settings.validation {
            engine::ValidationMode::Strict => wit::ValidationMode::Strict,
            engine::ValidationMode::Permissive => wit::ValidationMode::Permissive,
            engine::ValidationMode::None => wit::ValidationMode::None,
        },
        cedar_version: source.settings.cedar_version.clone(),
    }
}

pub(crate) fn limits(limits: engine::RequestLimits) -> wit::RequestLimits {
    wit::RequestLimits {
        max_context_bytes: limits.max_context_bytes,
        max_depth: limits.max_depth,
        max_nodes: limits.max_nodes,
    }
}

pub(crate) fn diagnostic(found: wit::Diagnostic) -> engine::Diagnostic {
    engine::Diagnostic {
        file: found.file,
        line: found.line,
        column: found.column,
        offset: found.offset,
        length: found.length,
        message: found.message,
        help: found.help,
    }
}

fn uid(uid: &engine::EntityUid) -> wit::EntityUid {
    wit::EntityUid {
        type_name: uid.type_name.clone(),
        id: uid.id.clone(),
    }
}

fn attributes(attributes: &engine::Attributes) -> wit::Attributes {
    let nodes = attributes
        .nodes
        .iter()
        .map(|node| match node {
            engine::ValueNode::Bool(b) => wit::ValueNode::Boolean(*b),
            engine::ValueNode::Long(n) => wit::ValueNode::Long(*n),
            engine::ValueNode::String(s) => wit::ValueNode::String(s.clone()),
            engine::ValueNode::Entity(entity) => wit::ValueNode::Entity(uid(entity)),
            engine::ValueNode::Extension(kind, arg) => wit::ValueNode::Extension((
                match kind {
                    engine::ExtensionKind::Ip => wit::ExtensionKind::Ip,
                    engine::ExtensionKind::Decimal => wit::ExtensionKind::Decimal,
                    engine::ExtensionKind::Datetime => wit::ExtensionKind::Datetime,
                    engine::ExtensionKind::Duration => wit::ExtensionKind::Duration,
                },
                arg.clone(),
            )),
            engine::ValueNode::ExtensionCall(name, args) => {
                wit::ValueNode::ExtensionCall((name.clone(), args.clone()))
            }
            engine::ValueNode::Set(children) => wit::ValueNode::Set(children.clone()),
            engine::ValueNode::Record(fields) => wit::ValueNode::Record(fields.clone()),
        })
        .collect();
    wit::Attributes {
        nodes,
        fields: attributes.fields.clone(),
    }
}

pub(crate) fn request(request: &engine::Request) -> wit::Request {
    wit::Request {
        principal: uid(&request.principal),
        action: uid(&request.action),
        resource: uid(&request.resource),
        context: match &request.context {
            engine::ContextInput::Typed(typed) => wit::Context::Typed(attributes(typed)),
            engine::ContextInput::Json(json) => wit::Context::Json(json.clone()),
        },
        entities: request
            .entities
            .iter()
            .map(|entity| wit::Entity {
                uid: uid(&entity.uid),
                attrs: attributes(&entity.attrs),
                parents: entity.parents.iter().map(uid).collect(),
                tags: attributes(&entity.tags),
            })
            .collect(),
    }
}

pub(crate) fn response(response: wit::Response) -> engine::Response {
    engine::Response {
        decision: match response.decision {
            wit::Decision::Allow => engine::Decision::Allow,
            wit::Decision::Deny => engine::Decision::Deny,
        },
        determining_policies: response.determining_policies,
        errors: response
            .errors
            .into_iter()
            .map(|err| engine::PolicyError {
                policy_id: err.policy_id,
                message: err.message,
            })
            .collect(),
        bundle_id: response.bundle_id,
    }
}

pub(crate) fn request_error(err: wit::RequestError) -> engine::RequestError {
    match err {
        wit::RequestError::Invalid(wit::FieldError { field, message }) => {
            engine::RequestError::Invalid { field, message }
        }
        wit::RequestError::LimitExceeded(wit::FieldError { field, message }) => {
            engine::RequestError::LimitExceeded { field, message }
        }
    }
}
