//! The route stage: normalize the request path once, match it against the
//! route table, and name the Cedar action and resource it maps to. The
//! upstream is sent exactly the normalized path, so the gateway and the
//! upstream can never disagree about which route a request is.

use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest path accepted, in bytes.
pub const MAX_PATH: usize = 2048;

/// Why a path was refused before any route was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with `/`")]
    NotAbsolute,
    #[error("path is too long")]
    TooLong,
    #[error("path has an invalid percent-encoding")]
    BadEncoding,
    #[error("path encodes a character that is ambiguous in a path (`{0}`)")]
    AmbiguousEncoding(String),
    #[error("path contains a character that is not allowed (`{0}`)")]
    ForbiddenChar(char),
    #[error("path climbs above the root")]
    AboveRoot,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters a path segment may carry unescaped besides the unreserved
/// ones (RFC 3986 `pchar`, less `;`, which is refused): an escape of one of
/// these is decoded, so `vip%3A1` and `vip:1` are one path.
fn is_plain_in_segment(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,=:@".contains(&b)
}

/// Decodes every escape left in a normalized path (which holds valid
/// escapes of printable ASCII only): the text an upstream's router hands
/// its handler, and so the id policies must see.
fn decode_all(normalized: &str) -> Arc<str> {
    if !normalized.contains('%') {
        return Arc::from(normalized);
    }
    let bytes = normalized.as_bytes();
    let mut out = String::with_capacity(normalized.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push(char::from(hi * 16 + lo));
            i += 3;
        } else {
            out.push(char::from(bytes[i]));
            i += 1;
        }
    }
    Arc::from(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Appends `segment` to `out` with the percent-escapes of characters a
/// segment may carry plainly decoded and the others upper-cased; refuses
/// escapes that would change the path's structure or meaning (`%2F`,
/// `%5C`, `%25`, controls) and characters servers treat differently (`\`,
/// `;`, controls).
fn decode_segment(segment: &str, out: &mut String) -> Result<(), PathError> {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
            else {
                return Err(PathError::BadEncoding);
            };
            let decoded = hi * 16 + lo;
            if is_plain_in_segment(decoded) {
                out.push(char::from(decoded));
            } else if matches!(decoded, b'/' | b'\\' | b'%' | b';') || decoded < 0x20 || decoded == 0x7f {
                return Err(PathError::AmbiguousEncoding(format!("%{decoded:02X}")));
            } else {
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(hi)]));
                out.push(char::from(HEX_UPPER[usize::from(lo)]));
            }
            i += 3;
            continue;
        }
        if !kept_as_is(b) {
            return Err(PathError::ForbiddenChar(char::from(b)));
        }
        out.push(char::from(b));
        i += 1;
    }
    Ok(())
}

/// Whether a segment keeps byte `b` as it is: printable ASCII but `%` (an
/// escape, decoded) and the bytes servers read differently (backslash and
/// `;`, refused). Controls, DEL and non-ASCII bytes are refused too.
fn kept_as_is(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && !matches!(b, b'%' | b'\\' | b';')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// The one normalization of a request path: percent-decoding of unreserved
/// characters, removal of `.` and `..` segments, collapsing of repeated
/// slashes and of a trailing slash. What is ambiguous is refused. Written
/// in one pass into one string (a `..` takes back the segment before it).
pub fn normalize(raw: &str) -> Result<String, PathError> {
    if raw.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    if is_normal(raw) {
        return Ok(raw.to_owned());
    }
    rebuilt(raw)
}

/// Whether `raw` is its own normal form, checked in one pass without
/// writing anything (most requests' paths): absolute, no empty, `.` or `..`
/// segment, no trailing slash (but the root), and only bytes a segment
/// keeps as they are (no `%`, backslash, `;`, control or non-ASCII byte).
fn is_normal(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    if bytes == b"/" {
        return true;
    }
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut segment = 1;
    for i in 1..=bytes.len() {
        match bytes.get(i) {
            None | Some(b'/') => {
                if matches!(&bytes[segment..i], b"" | b"." | b"..") {
                    return false;
                }
                segment = i + 1;
            }
            Some(&b) if !kept_as_is(b) => return false,
            Some(_) => {}
        }
    }
    true
}

/// [`normalize`] of a path that is not its own normal form.
fn rebuilt(raw: &str) -> Result<String, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut out = String::with_capacity(raw.len());
    for segment in rest.split('/') {
        let start = out.len();
        out.push('/');
        decode_segment(segment, &mut out)?;
        match &out[start + 1..] {
            "" | "." => out.truncate(start),
            ".." => {
                out.truncate(start);
                let previous = out.rfind('/').ok_or(PathError::AboveRoot)?;
                out.truncate(previous);
            }
            _ => {}
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: exactly one segment.
    Param(String),
    /// `{name*}`: the rest of the path, at least one segment; last only.
    Rest(String),
}

/// Why a route of the configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("route `{route}`: template `{template}` is invalid: {reason}")]
    Template { route: String, template: String, reason: String },
    #[error("route `{route}`: {reason}")]
    Invalid { route: String, reason: String },
    #[error("routes `{0}` and `{1}` match the same paths and methods")]
    Overlap(String, String),
}

/// A compiled path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

impl Template {
    pub fn parse(route: &str, source: &str) -> Result<Self, RouteError> {
        let err = |reason: &str| RouteError::Template {
            route: route.to_owned(),
            template: source.to_owned(),
            reason: reason.to_owned(),
        };
        let normalized = normalize(source).map_err(|e| err(&e.to_string()))?;
        if normalized != source {
            return Err(err("must already be in normal form (no `.`, `..`, `//`, trailing `/` or escapes)"));
        }
        let mut segments = Vec::new();
        let mut names = Vec::new();
        let parts: Vec<&str> = source.split('/').skip(1).filter(|s| !s.is_empty()).collect();
        for (i, part) in parts.iter().enumerate() {
            let segment = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (name, rest) = match inner.strip_suffix('*') {
                    Some(name) => (name, true),
                    None => (inner, false),
                };
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(err("parameter names are letters, digits and `_`"));
                }
                if names.contains(&name) {
                    return Err(err("parameter names must be unique"));
                }
                names.push(name);
                if rest && i + 1 != parts.len() {
                    return Err(err("a `{name*}` parameter must come last"));
                }
                if rest { Segment::Rest(name.to_owned()) } else { Segment::Param(name.to_owned()) }
            } else if part.contains(['{', '}']) {
                return Err(err("a parameter must be a whole segment"));
            } else {
                Segment::Literal((*part).to_owned())
            };
            segments.push(segment);
        }
        Ok(Self { source: source.to_owned(), segments })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Matches a normalized path (no empty segments), returning the
    /// parameters by name, each a slice of `path`.
    fn matches<'p>(&self, path: &'p str) -> Option<Vec<(&str, &'p str)>> {
        let mut rest = path.strip_prefix('/').unwrap_or(path);
        let mut params = Vec::new();
        for segment in &self.segments {
            if rest.is_empty() {
                return None;
            }
            let (part, after) = rest.split_once('/').unwrap_or((rest, ""));
            match segment {
                Segment::Literal(lit) if part != lit => return None,
                Segment::Literal(_) => {}
                Segment::Param(name) => params.push((name.as_str(), part)),
                Segment::Rest(name) => {
                    params.push((name.as_str(), rest));
                    return Some(params);
                }
            }
            rest = after;
        }
        rest.is_empty().then_some(params)
    }

    /// The literal a path's first segment must be, when the template starts
    /// with one: routes are skipped on it without walking the path.
    fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(literal)) => Some(literal),
            _ => None,
        }
    }

    /// Specificity for picking among matches: literals first, then
    /// single parameters; rest parameters last.
    fn rank(&self) -> (usize, usize, usize) {
        let literals = self.segments.iter().filter(|s| matches!(s, Segment::Literal(_))).count();
        let params = self.segments.iter().filter(|s| matches!(s, Segment::Param(_))).count();
        let rest = self.segments.iter().filter(|s| matches!(s, Segment::Rest(_))).count();
        (self.segments.len() - rest, literals, params)
    }

    /// Whether some path matches both templates.
    pub fn overlaps(&self, other: &Template) -> bool {
        fn unify(a: &[Segment], b: &[Segment]) -> bool {
            match (a.first(), b.first()) {
                (None, None) => true,
                // A rest parameter takes one or more segments: anything
                // non-empty left on the other side fits.
                (Some(Segment::Rest(_)), Some(_)) | (Some(_), Some(Segment::Rest(_))) => true,
                (Some(Segment::Literal(x)), Some(Segment::Literal(y))) if x != y => false,
                (Some(_), Some(_)) => unify(&a[1..], &b[1..]),
                _ => false,
            }
        }
        unify(&self.segments, &other.segments)
    }

    /// A path that this template matches, for overlap detection.
    fn witness(&self) -> String {
        let parts: Vec<String> = self
            .segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.clone(),
                Segment::Param(_) | Segment::Rest(_) => "x".to_owned(),
            })
            .collect();
        format!("/{}", parts.join("/"))
    }
}

/// How the resource of a route is named: a Cedar entity type and the path
/// parameter holding its id (or a fixed id, for collections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceId {
    Param(String),
    /// Shared with every match of the route.
    Fixed(Arc<str>),
}

/// A route: which paths and methods, to which upstream, as which action on
/// which resource.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub template: Template,
    /// Upper-case HTTP method -> Cedar action id (shared with the matches).
    pub actions: BTreeMap<String, Arc<str>>,
    pub upstream: String,
    pub resource_type: Arc<str>,
    pub resource_id: ResourceId,
    /// Whether the upstream receives the caller's `Authorization` header (a
    /// platform credential it could replay); otherwise only the assertion.
    pub forward_authorization: bool,
    /// The upstream authenticates the caller itself: the gateway reads no
    /// credential (see `RouteFile::upstream_authenticates`).
    pub upstream_authenticates: bool,
    /// The plan feature the tenant needs for this route (402 without it).
    pub feature: Option<String>,
    /// The route's own rate limits, whoever calls.
    pub rate_limit: Option<RouteLimit>,
}

/// A route's own rate limits: `per_ip` requests per client address and
/// `global` in all, each per `window_secs` (with a burst of as many).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLimit {
    pub per_ip: Option<u64>,
    pub global: Option<u64>,
    pub window_secs: u64,
}

impl Route {
    /// The template's parameters if it matches `path` (whose first segment
    /// is `first`: a route whose template starts with another literal is
    /// passed over without matching).
    fn matching<'p>(&self, path: &'p str, first: &str) -> Option<Vec<(&str, &'p str)>> {
        if self.template.first_literal().is_some_and(|literal| literal != first) {
            return None;
        }
        self.template.matches(path)
    }
}

/// The first segment of a normalized path.
fn first_segment(path: &str) -> &str {
    path.strip_prefix('/').unwrap_or(path).split('/').next().unwrap_or_default()
}

/// The result of routing a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub route: usize,
    pub path: String,
    /// The route's, shared: a match costs no copy of them.
    pub action: Arc<str>,
    pub resource_type: Arc<str>,
    pub resource_id: Arc<str>,
    /// The route's choice: the upstream receives the caller's credential.
    pub forward_authorization: bool,
    /// The route's own rate limits.
    pub rate_limit: Option<RouteLimit>,
}

/// The resource type of the platform's own routes, which belong to no tenant.
pub const PLATFORM_RESOURCE: &str = "Platform";

impl RouteMatch {
    /// Whether the route is about a tenant's resource. The platform's own
    /// routes are not: they pass through to the backend, which decides each
    /// call (with the caller's tenant layer) itself.
    pub fn needs_tenant(&self) -> bool {
        *self.resource_type != *PLATFORM_RESOURCE
    }
}

/// Why a request has no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("no route for this path")]
    NotFound,
    /// Routes take the path, but not the method: `allow` lists the methods
    /// they take (for the `Allow` header).
    #[error("method not allowed on this route")]
    MethodNotAllowed { allow: String },
}

/// The route table, ordered most specific first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table; refuses routes that match the same paths with the
    /// same specificity and a common method, where the choice would be arbitrary.
    pub fn new(mut routes: Vec<Route>) -> Result<Self, RouteError> {
        for route in &routes {
            if route.actions.is_empty() {
                return Err(RouteError::Invalid { route: route.name.clone(), reason: "has no methods".into() });
            }
            if let ResourceId::Param(p) = &route.resource_id
                && !route.template.segments.iter().any(|s| matches!(s, Segment::Param(n) | Segment::Rest(n) if n == p))
            {
                return Err(RouteError::Invalid {
                    route: route.name.clone(),
                    reason: format!("resource id parameter `{p}` is not in the template"),
                });
            }
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.template.rank()));
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[i + 1..] {
                let same_rank = a.template.rank() == b.template.rank();
                let shared_method = a.actions.keys().any(|m| b.actions.contains_key(m));
                let overlap = a.template.matches(&b.template.witness()).is_some()
                    || b.template.matches(&a.template.witness()).is_some();
                if same_rank && shared_method && overlap {
                    return Err(RouteError::Overlap(a.name.clone(), b.name.clone()));
                }
            }
        }
        Ok(Self { routes })
    }

    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Routes a request: normalizes `raw_path` and finds the most specific
    /// route for it and `method`. HEAD is GET without the body: where no
    /// route names HEAD, it is routed (and decided) as GET.
    pub fn route(&self, method: &str, raw_path: &str) -> Result<RouteMatch, NoRoute> {
        let path = normalize(raw_path)?;
        let found = match self.find(method, &path) {
            None if method == "HEAD" => self.find("GET", &path),
            found => found,
        };
        let Some((index, action, resource_id)) = found else {
            return Err(self.refusal(&path));
        };
        let route = &self.routes[index];
        Ok(RouteMatch {
            route: index,
            path,
            action,
            resource_type: Arc::clone(&route.resource_type),
            resource_id,
            forward_authorization: route.forward_authorization,
            rate_limit: route.rate_limit,
        })
    }

    /// The most specific route for a normalized path and a method: its
    /// index, action and resource id.
    fn find(&self, method: &str, path: &str) -> Option<(usize, Arc<str>, Arc<str>)> {
        let first = first_segment(path);
        for (index, route) in self.routes.iter().enumerate() {
            let Some(params) = route.matching(path, first) else {
                continue;
            };
            let Some(action) = route.actions.get(method) else {
                continue;
            };
            // The id as the upstream will read it: escapes decoded, so no
            // second spelling of a resource escapes a policy naming it.
            let resource_id = match &route.resource_id {
                ResourceId::Fixed(id) => Arc::clone(id),
                ResourceId::Param(p) => {
                    params.iter().find(|(name, _)| name == p).map_or_else(|| Arc::from(""), |(_, v)| decode_all(v))
                }
            };
            return Some((index, Arc::clone(action), resource_id));
        }
        None
    }

    /// Why no route takes a path: none matches it, or those that do take
    /// other methods (named, HEAD with GET).
    fn refusal(&self, path: &str) -> NoRoute {
        let first = first_segment(path);
        let mut allow = std::collections::BTreeSet::new();
        for route in &self.routes {
            if route.matching(path, first).is_some() {
                allow.extend(route.actions.keys().map(String::as_str));
            }
        }
        if allow.is_empty() {
            return NoRoute::NotFound;
        }
        if allow.contains("GET") {
            allow.insert("HEAD");
        }
        NoRoute::MethodNotAllowed { allow: allow.into_iter().collect::<Vec<_>>().join(", ") }
    }
}

#[cfg(test)]
mod tests;
