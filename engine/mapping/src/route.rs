//! Path templates and the route table: method and path → action and
//! resource.

use cedar_edge_core::EntityUid;

use crate::Refusal;
use crate::config::RoutesConfig;

/// A route with its template parsed and its actions resolved.
#[derive(Debug)]
pub(crate) struct CompiledRoute {
    segments: Vec<Segment>,
    pub(crate) methods: Vec<(String, EntityUid)>,
    pub(crate) resource_type: String,
    resource_id: String,
    case_insensitive: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(String),
    Rest(String),
}

pub(crate) fn route(
    routes: &[CompiledRoute],
    method: &str,
    path: &str,
) -> Result<(EntityUid, EntityUid), Refusal> {
    for route in routes {
        let Some(captures) = match_path(&route.segments, path, route.case_insensitive)? else {
            continue;
        };
        let action = route
            .methods
            .iter()
            .find(|(name, _)| name == method)
            .or_else(|| route.methods.iter().find(|(name, _)| name == "*"))
            .map(|(_, action)| action.clone())
            .ok_or_else(|| {
                Refusal::Invalid(format!("method `{method}` has no action on this route"))
            })?;
        let id = fill(&route.resource_id, &captures);
        return Ok((action, EntityUid::new(&route.resource_type, id)));
    }
    Err(Refusal::Invalid(format!("no route matches `{path}`")))
}

pub(crate) fn compile_routes(
    config: &RoutesConfig,
    problems: &mut Vec<String>,
) -> Vec<CompiledRoute> {
    let mut routes = Vec::new();
    for (index, route) in config.routes.iter().enumerate() {
        let at = |message: String| format!("routes[{index}] `{}`: {message}", route.path);
        let segments = match parse_template(&route.path) {
            Ok(segments) => segments,
            Err(message) => {
                problems.push(at(message));
                continue;
            }
        };
        let captured: Vec<&str> = segments
            .iter()
            .filter_map(|segment| match segment {
                Segment::Capture(name) | Segment::Rest(name) => Some(name.as_str()),
                Segment::Literal(_) => None,
            })
            .collect();
        for placeholder in placeholders(&route.resource.id) {
            if !captured.contains(&placeholder) {
                problems.push(at(format!(
                    "the resource id uses `{{{placeholder}}}`, which the path does not capture"
                )));
            }
        }
        if route.methods.is_empty() {
            problems.push(at("no methods".to_owned()));
        }
        let methods = route
            .methods
            .iter()
            .map(|(method, action)| {
                (
                    method.to_ascii_uppercase().replace("ANY", "*"),
                    EntityUid::new(&config.action_type, action),
                )
            })
            .collect();
        routes.push(CompiledRoute {
            segments,
            methods,
            resource_type: route.resource.type_name.clone(),
            resource_id: route.resource.id.clone(),
            case_insensitive: route.case_insensitive,
        });
    }
    routes
}

fn parse_template(template: &str) -> Result<Vec<Segment>, String> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err("a path template starts with `/`".to_owned());
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let last = parts.len().saturating_sub(1);
    parts
        .iter()
        .enumerate()
        .map(
            |(index, part)| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) if name.ends_with('*') && index == last => {
                    Ok(Segment::Rest(name.trim_end_matches('*').to_owned()))
                }
                Some(name) if name.ends_with('*') => {
                    Err(format!("`{{{name}}}` may only be the last segment"))
                }
                Some(name) if name.is_empty() || name.contains(['{', '}']) => {
                    Err(format!("`{part}` is not a placeholder"))
                }
                Some(name) => Ok(Segment::Capture(name.to_owned())),
                None if part.contains(['{', '}']) => {
                    Err(format!("`{part}`: a placeholder fills a whole segment"))
                }
                None => Ok(Segment::Literal((*part).to_owned())),
            },
        )
        .collect()
}

fn placeholders(template: &str) -> Vec<&str> {
    template
        .split('{')
        .skip(1)
        .filter_map(|rest| rest.split('}').next())
        .collect()
}

/// Matches a path against a template; captured segments are
/// percent-decoded, and one that decodes to invalid UTF-8 or to a `/` is
/// refused rather than guessed at.
fn match_path(
    segments: &[Segment],
    path: &str,
    case_insensitive: bool,
) -> Result<Option<Vec<(String, String)>>, Refusal> {
    let Some(rest) = path.strip_prefix('/') else {
        return Ok(None);
    };
    // `/dir/` matches what `/dir` matches: a trailing `/` never moves a
    // request to another route.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let parts: Vec<&str> = rest.split('/').collect();
    let mut captures = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        match segment {
            Segment::Rest(name) => {
                let tail = parts.get(index..).unwrap_or_default().join("/");
                captures.push((name.clone(), percent_decode(&tail, true)?));
                return Ok(Some(captures));
            }
            Segment::Literal(literal) => {
                // Compared decoded: upstreams decode `%3A` to `:` before
                // they route, so `users%3Asearch` is `users:search`.
                let Some(part) = parts.get(index) else {
                    return Ok(None);
                };
                let part = percent_decode(part, false)?;
                let matches = if case_insensitive {
                    fold_case(&part) == fold_case(literal)
                } else {
                    part == *literal
                };
                if !matches {
                    return Ok(None);
                }
            }
            Segment::Capture(name) => match parts.get(index) {
                Some(part) if !part.is_empty() => {
                    captures.push((name.clone(), percent_decode(part, false)?));
                }
                _ => return Ok(None),
            },
        }
    }
    Ok((parts.len() == segments.len()).then_some(captures))
}

/// Case folding as the most lenient upstream does it: a character whose
/// upper or lower case starts with an ASCII letter counts as that letter,
/// so the dotless `ı` or the Kelvin sign `K`, which Java's
/// `equalsIgnoreCase` and Unicode-folding routers take for `i` and `k`,
/// cannot slip past a case-insensitive route.
fn fold_case(text: &str) -> String {
    text.chars()
        .map(|ch| {
            first_ascii(ch.to_uppercase())
                .or_else(|| first_ascii(ch.to_lowercase()))
                .unwrap_or(ch)
                .to_ascii_lowercase()
        })
        .collect()
}

/// The first character of a case mapping, if it is ASCII: `İ` lower-cases
/// to `i` and a combining dot, which Java's simple mapping reads as `i`.
/// Folding too much only sends more spellings to a literal's route.
fn first_ascii(mut mapped: impl Iterator<Item = char>) -> Option<char> {
    mapped.next().filter(char::is_ascii)
}

fn percent_decode(text: &str, allow_slash: bool) -> Result<String, Refusal> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let hex = bytes
                .get(index + 1..index + 3)
                .and_then(|pair| std::str::from_utf8(pair).ok())
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| Refusal::Invalid(format!("bad percent-encoding in `{text}`")))?;
            out.push(hex);
            index += 3;
        } else {
            out.push(byte);
            index += 1;
        }
    }
    let decoded = String::from_utf8(out)
        .map_err(|_| Refusal::Invalid(format!("`{text}` does not decode to UTF-8")))?;
    if !allow_slash && decoded.contains('/') {
        return Err(Refusal::Invalid(format!("`{text}` decodes to a `/`")));
    }
    Ok(decoded)
}

fn fill(template: &str, captures: &[(String, String)]) -> String {
    let mut filled = template.to_owned();
    for (name, value) in captures {
        filled = filled.replace(&format!("{{{name}}}"), value);
    }
    filled
}
