//! CORS (the Fetch standard's CORS protocol) for the registry listener, opt-in through
//! `[http] cors_allow_origins`: which origins a browser page may read answers from, and the
//! preflight answers for `OPTIONS`.
//!
//! Invariants: with an empty list nothing here adds a header (CORS is off, as before). `"*"`
//! opens the read routes (GET/HEAD and the stream) to every origin and never a write route:
//! a write answer names an exactly listed origin or none. No credentials are ever allowed (the
//! registry has no cookies; a signed write carries its authority in its body). Every answer of
//! a CORS-enabled listener carries `Vary: Origin`, because whether it carries
//! `Access-Control-Allow-Origin` depends on the request's `Origin`.

use crate::http::{Request, Response};

/// Request headers a page may send (beyond the CORS-safelisted ones). `Authorization` carries a
/// capability token the page sets itself (docs/API.md "Tokens"); it is not a browser-managed
/// credential, so "no credentials" still holds.
const ALLOW_HEADERS: &str = "Content-Type, Last-Event-ID, If-None-Match, X-Corr-Id, Authorization";
/// Response headers a page may read (beyond the safelisted ones).
const EXPOSE_HEADERS: &str = "ETag, X-Corr-Id, Retry-After";
/// How long a browser may cache a preflight answer, seconds.
const MAX_AGE_SECS: u32 = 600;

/// The configured origins.
#[derive(Clone, Debug, Default)]
pub struct Cors {
    exact: Vec<String>,
    any_read: bool,
}

impl Cors {
    /// From `[http] cors_allow_origins` (validated by the config: `"*"` or `scheme://host[:port]`).
    pub fn new(origins: &[String]) -> Cors {
        Cors {
            exact: origins.iter().filter(|o| *o != "*").cloned().collect(),
            any_read: origins.iter().any(|o| o == "*"),
        }
    }

    fn enabled(&self) -> bool {
        self.any_read || !self.exact.is_empty()
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin` to a read route
    /// (`write` false) or a write route.
    fn allow_origin(&self, origin: &str, write: bool) -> Option<String> {
        if self.exact.iter().any(|o| o == origin) {
            Some(origin.to_string())
        } else if self.any_read && !write {
            Some("*".to_string())
        } else {
            None
        }
    }

    /// The CORS headers an actual (non-preflight) answer to `req` needs.
    pub fn headers(&self, req: &Request, write: bool) -> Vec<(&'static str, String)> {
        if !self.enabled() {
            return Vec::new();
        }
        let mut out = vec![("Vary", "Origin".to_string())];
        if let Some(allowed) = req
            .header("origin")
            .and_then(|o| self.allow_origin(o, write))
        {
            out.push(("Access-Control-Allow-Origin", allowed));
            out.push(("Access-Control-Expose-Headers", EXPOSE_HEADERS.to_string()));
        }
        out
    }

    /// The answer to `OPTIONS` on a route whose methods are `allow`: a CORS preflight (an
    /// `Origin` and `Access-Control-Request-Method`) gets the `Access-Control-*` headers when
    /// the origin may use the requested method there; every `OPTIONS` gets `204` with `Allow`.
    pub fn options(&self, req: &Request, allow: &str, write: bool) -> Response {
        let mut response = Response::new(204, Vec::new()).header("Allow", allow.to_string());
        if !self.enabled() {
            return response;
        }
        response = response.header("Vary", "Origin".to_string());
        let (Some(origin), Some(method)) = (
            req.header("origin"),
            req.header("access-control-request-method"),
        ) else {
            return response;
        };
        let method_ok = allow.split(", ").any(|m| m == method.trim());
        match self.allow_origin(origin, write) {
            Some(allowed) if method_ok => response
                .header("Access-Control-Allow-Origin", allowed)
                .header("Access-Control-Allow-Methods", allow.to_string())
                .header("Access-Control-Allow-Headers", ALLOW_HEADERS.to_string())
                .header("Access-Control-Max-Age", MAX_AGE_SECS.to_string()),
            _ => response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Method;
    use std::time::Instant;

    fn req(headers: &[(&str, &str)]) -> Request {
        Request {
            method: Method::Options,
            path: "/registry/head".into(),
            query: None,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
            corr_id: "t".into(),
            started: Instant::now(),
        }
    }

    fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn decorate(cors: &Cors, req: &Request, write: bool) -> Response {
        let mut r = Response::new(200, Vec::new());
        r.headers.extend(cors.headers(req, write));
        r
    }

    #[test]
    fn star_opens_reads_only_and_exact_origins_open_writes() {
        let cors = Cors::new(&["*".into(), "http://a.test:8080".into()]);
        let from = |o: &str| req(&[("origin", o)]);
        let r = decorate(&cors, &from("http://b.test"), false);
        assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&r, "vary"), Some("Origin"));
        let r = decorate(&cors, &from("http://b.test"), true);
        assert_eq!(header(&r, "access-control-allow-origin"), None);
        let r = decorate(&cors, &from("http://a.test:8080"), true);
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some("http://a.test:8080")
        );
    }

    #[test]
    fn off_adds_nothing_and_options_always_says_allow() {
        let cors = Cors::new(&[]);
        assert!(cors
            .headers(&req(&[("origin", "http://a")]), false)
            .is_empty());
        let r = cors.options(&req(&[]), "GET, HEAD, OPTIONS", false);
        assert_eq!(r.status, 204);
        assert_eq!(header(&r, "allow"), Some("GET, HEAD, OPTIONS"));
    }

    #[test]
    fn preflight_needs_an_allowed_origin_and_method() {
        let cors = Cors::new(&["http://a.test".into()]);
        let pre = |o: &str, m: &str| req(&[("origin", o), ("access-control-request-method", m)]);
        let r = cors.options(&pre("http://a.test", "POST"), "POST, OPTIONS", true);
        assert_eq!(
            header(&r, "access-control-allow-methods"),
            Some("POST, OPTIONS")
        );
        assert_eq!(header(&r, "access-control-max-age"), Some("600"));
        assert!(header(&r, "access-control-allow-headers").is_some());
        let r = cors.options(&pre("http://a.test", "DELETE"), "POST, OPTIONS", true);
        assert_eq!(header(&r, "access-control-allow-origin"), None);
        let r = cors.options(&pre("http://evil.test", "GET"), "GET, HEAD, OPTIONS", false);
        assert_eq!(header(&r, "access-control-allow-origin"), None);
    }
}
