//! The route table: every operation's method and path and the rules that
//! apply to it, in one place. Admission (token, rate limit), the fast path,
//! the lean watch path and the `Allow` header of a 405 all read it, so a new
//! route is one line here; a test checks it against the OpenAPI document the
//! operations generate, both ways.

use std::sync::LazyLock;

use poem::http::Method;

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: probes, and the documents that say how to get in.
    Public,
    /// With `--auth-file`, a bearer token whose scopes cover what it
    /// touches.
    Token,
}

/// Which server path may take a request before the full router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// Only the router (poem-openapi's operation).
    Router,
    /// The fast path (`fast_path.rs`) serves its plain shape.
    Fast,
    /// A watch stream: the lean watch path may serve it as a connection's
    /// first request, and it gets the connection's closer.
    Watch,
}

/// One operation of the API.
#[derive(Clone, Debug)]
pub struct Route {
    /// Its operationId in the spec.
    pub operation: &'static str,
    pub method: Method,
    /// Its path template, as the spec writes it (`/store/{key}`).
    pub template: &'static str,
    pub access: Access,
    /// Counted by the rate limiter (probes and metrics scrapes are not).
    pub rate_limited: bool,
    pub path: Path,
}

const fn route(
    operation: &'static str,
    method: Method,
    template: &'static str,
    access: Access,
    rate_limited: bool,
    path: Path,
) -> Route {
    Route {
        operation,
        method,
        template,
        access,
        rate_limited,
        path,
    }
}

use Access::{Public, Token};

/// `GET /store/{key}`, which the fast path serves.
pub const GET_KEY: Route = route(
    "get_key",
    Method::GET,
    "/store/{key}",
    Token,
    true,
    Path::Fast,
);
/// `PUT /store/{key}`, which the fast path serves.
pub const PUT_KEY: Route = route(
    "put_key",
    Method::PUT,
    "/store/{key}",
    Token,
    true,
    Path::Fast,
);

/// `DELETE /store/{key}`, which the fast path serves.
pub const DELETE_KEY: Route = route(
    "delete_key",
    Method::DELETE,
    "/store/{key}",
    Token,
    true,
    Path::Fast,
);

/// Every operation the API answers.
pub const ROUTES: &[Route] = &[
    GET_KEY,
    PUT_KEY,
    DELETE_KEY,
    route(
        "compare_and_swap",
        Method::POST,
        "/store/cas/{key}",
        Token,
        true,
        Path::Router,
    ),
    route(
        "list_keys",
        Method::GET,
        "/store",
        Token,
        true,
        Path::Router,
    ),
    route(
        "delete_prefix",
        Method::DELETE,
        "/store",
        Token,
        true,
        Path::Router,
    ),
    route(
        "watch_key",
        Method::GET,
        "/watch_key/{key}",
        Token,
        true,
        Path::Watch,
    ),
    route(
        "watch_prefix",
        Method::GET,
        "/watch",
        Token,
        true,
        Path::Watch,
    ),
    route(
        "watch_keys",
        Method::POST,
        "/watch",
        Token,
        true,
        Path::Watch,
    ),
    route("batch", Method::POST, "/batch", Token, true, Path::Router),
    route("txn", Method::POST, "/txn", Token, true, Path::Router),
    route(
        "grant_lease",
        Method::POST,
        "/leases",
        Token,
        true,
        Path::Router,
    ),
    route(
        "list_leases",
        Method::GET,
        "/leases",
        Token,
        true,
        Path::Router,
    ),
    route(
        "get_lease",
        Method::GET,
        "/leases/{id}",
        Token,
        true,
        Path::Router,
    ),
    route(
        "revoke_lease",
        Method::DELETE,
        "/leases/{id}",
        Token,
        true,
        Path::Router,
    ),
    route(
        "keep_lease_alive",
        Method::POST,
        "/leases/{id}/keepalive",
        Token,
        true,
        Path::Router,
    ),
    route(
        "acquire_lock",
        Method::POST,
        "/locks/{name}",
        Token,
        true,
        Path::Router,
    ),
    route(
        "get_lock",
        Method::GET,
        "/locks/{name}",
        Token,
        true,
        Path::Router,
    ),
    route(
        "release_lock",
        Method::DELETE,
        "/locks/{name}",
        Token,
        true,
        Path::Router,
    ),
    route(
        "campaign",
        Method::POST,
        "/elections/{name}",
        Token,
        true,
        Path::Router,
    ),
    route(
        "get_election",
        Method::GET,
        "/elections/{name}",
        Token,
        true,
        Path::Router,
    ),
    route(
        "resign",
        Method::DELETE,
        "/elections/{name}",
        Token,
        true,
        Path::Router,
    ),
    route(
        "proclaim",
        Method::POST,
        "/elections/{name}/proclaim",
        Token,
        true,
        Path::Router,
    ),
    route(
        "observe_election",
        Method::GET,
        "/elections/{name}/observe",
        Token,
        true,
        Path::Router,
    ),
    route("backup", Method::GET, "/backup", Token, true, Path::Router),
    route("status", Method::GET, "/status", Token, true, Path::Router),
    route(
        "metrics",
        Method::GET,
        "/metrics",
        Token,
        false,
        Path::Router,
    ),
    route(
        "healthz",
        Method::GET,
        "/healthz",
        Public,
        false,
        Path::Router,
    ),
    route(
        "readyz",
        Method::GET,
        "/readyz",
        Public,
        false,
        Path::Router,
    ),
];

/// The documents served beside the operations: public, rate limited.
pub const DOCUMENTS: &[Route] = &[
    route(
        "spec_json",
        Method::GET,
        "/openapi.json",
        Public,
        true,
        Path::Router,
    ),
    route(
        "spec_yaml",
        Method::GET,
        "/openapi.yaml",
        Public,
        true,
        Path::Router,
    ),
];

/// Swagger UI and its files, under this path: public, rate limited.
pub const DOCS: &str = "/docs";

/// Whether `path` (without its query) fits `template`: the literal parts
/// equal, each `{param}` one non-empty segment. Asked on every request, so
/// it walks the bytes once instead of splitting either into segments.
pub fn fits(template: &str, path: &str) -> bool {
    let (mut template, mut path) = (template.as_bytes(), path.as_bytes());
    loop {
        let Some(open) = template.iter().position(|&byte| byte == b'{') else {
            return template == path;
        };
        let Some(rest) = path.strip_prefix(&template[..open]) else {
            return false;
        };
        let Some(close) = template[open..].iter().position(|&byte| byte == b'}') else {
            return false;
        };
        template = &template[open + close + 1..];
        let segment = rest
            .iter()
            .position(|&byte| byte == b'/')
            .unwrap_or(rest.len());
        if segment == 0 {
            return false;
        }
        path = &rest[segment..];
    }
}

/// The routes whose template `path` fits, whatever their method.
pub fn at(path: &str) -> impl Iterator<Item = &'static Route> + '_ {
    ROUTES
        .iter()
        .chain(DOCUMENTS)
        .filter(move |route| fits(route.template, path))
}

/// The operation `method` and `path` (without its query) reach, if any.
pub fn find(method: &Method, path: &str) -> Option<&'static Route> {
    at(path).find(|route| route.method == *method)
}

/// What admission applies to a request: who may make it, and whether the
/// rate limiter counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    pub access: Access,
    pub rate_limited: bool,
}

impl Route {
    pub const fn rules(&self) -> Rules {
        Rules {
            access: self.access,
            rate_limited: self.rate_limited,
        }
    }
}

/// The rules for `method` on `path`: its route's; for another method on a
/// route's path (a 405) that route's; public and limited for Swagger UI's
/// files; a token and limited for unknown paths (so guessing paths says
/// 401 before 404, and is throttled).
pub fn rules(method: &Method, path: &str) -> Rules {
    let mut routes = at(path);
    let Some(first) = routes.next() else {
        let docs = path == DOCS || path.starts_with("/docs/");
        return Rules {
            access: if docs { Public } else { Token },
            rate_limited: true,
        };
    };
    if first.method == *method {
        return first.rules();
    }
    routes
        .find(|route| route.method == *method)
        .unwrap_or(first)
        .rules()
}

/// A watch route's template taken apart once: its method, the literal part
/// before its parameter, and whether one follows (a last segment).
struct WatchTemplate {
    method: Method,
    literal: &'static str,
    param: bool,
}

static WATCHES: LazyLock<Vec<WatchTemplate>> = LazyLock::new(|| {
    ROUTES
        .iter()
        .filter(|route| route.path == Path::Watch)
        .map(|route| {
            let (literal, param) = match route.template.split_once('{') {
                Some((literal, _)) => (literal, true),
                None => (route.template, false),
            };
            WatchTemplate {
                method: route.method.clone(),
                literal,
                param,
            }
        })
        .collect()
});

/// Whether a request may open a watch stream: the lean watch path may
/// take it, and it carries the connection's closer. Asked of every
/// request hyper serves, so it compares with the watch routes' templates
/// taken apart once (a watch's parameter is its last segment).
pub fn streams(method: &Method, path: &str) -> bool {
    WATCHES.iter().any(|watch| {
        watch.method == *method
            && match path.strip_prefix(watch.literal) {
                Some(rest) if watch.param => !rest.is_empty() && !rest.contains('/'),
                Some(rest) => rest.is_empty(),
                None => false,
            }
    })
}

/// The methods `path` answers (HEAD with GET), for a 405's `Allow`.
pub fn allowed(path: &str) -> Vec<Method> {
    let mut methods: Vec<Method> = at(path).map(|route| route.method.clone()).collect();
    if methods.contains(&Method::GET) {
        methods.push(Method::HEAD);
    }
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fit_their_paths_only() {
        assert!(fits("/store/{key}", "/store/k"));
        assert!(!fits("/store/{key}", "/store/"));
        assert!(!fits("/store/{key}", "/store/a/b"));
        assert!(fits("/store/cas/{key}", "/store/cas/k"));
        assert!(fits("/store/{key}", "/store/cas"));
        assert!(!fits("/store", "/store/k"));
        assert_eq!(
            find(&Method::GET, "/store/k").map(|r| r.operation),
            Some("get_key")
        );
        assert_eq!(
            find(&Method::POST, "/store/cas/k").map(|r| r.operation),
            Some("compare_and_swap")
        );
        assert_eq!(find(&Method::PATCH, "/store/k").map(|r| r.operation), None);
    }

    #[test]
    fn rules_for_paths_no_route_names() {
        let rules = |method: Method, path: &str| rules(&method, path);
        assert_eq!(rules(Method::GET, "/docs/index.css").access, Access::Public);
        assert_eq!(rules(Method::GET, "/no/such").access, Access::Token);
        assert!(rules(Method::GET, "/no/such").rate_limited);
        assert_eq!(rules(Method::POST, "/healthz").access, Access::Public);
        assert!(!rules(Method::GET, "/metrics").rate_limited);
        assert!(!rules(Method::POST, "/metrics").rate_limited);
        assert!(rules(Method::GET, "/openapi.json").rate_limited);
        assert!(streams(&Method::POST, "/watch"));
        assert!(!streams(&Method::DELETE, "/watch"));
        for path in [
            "/watch",
            "/watch_key/k",
            "/watch_key/",
            "/watch_key/a/b",
            "/watchx",
            "/",
        ] {
            for method in [Method::GET, Method::POST] {
                let by_table = find(&method, path).is_some_and(|r| r.path == Path::Watch);
                assert_eq!(streams(&method, path), by_table, "{method} {path}");
            }
        }
        assert_eq!(
            allowed("/store/k"),
            [Method::GET, Method::PUT, Method::DELETE, Method::HEAD]
        );
    }
}
