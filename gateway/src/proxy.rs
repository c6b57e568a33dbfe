//! The pingora side: a `ProxyHttp` whose `request_filter` runs the pipeline
//! and answers refusals itself, so `upstream_peer` only ever runs with a
//! `Permit` and takes its upstream from it; `upstream_request_filter` strips
//! client-sent identity headers and adds ours; `logging` records one access
//! line per request (`access`). Its connections are accepted and served by
//! the gateway's own workers ([`crate::workers`]); pingora's server serves
//! `/metrics` on the admin address and runs the upstreams' health checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::ErrorSource;
use pingora::apps::http_app::ServeHttp;
use pingora::http::ResponseHeader;
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::GenBackgroundService;
use pingora::services::listening::Service;
use tollgate_identity::decision::{DecisionId, is_request_id};
use tollgate_policies::DeterminingPolicy;

use crate::access::AccessLine;
use crate::client::{client_address, ip_text};
use crate::forward::{FORWARDED_FOR, REQUEST_ID, edit_parts, id_value, prepare_upstream_request};
use crate::pipeline::{Gateway, Incoming};
use crate::policy::{Denial, Permit};
use crate::reject::Reject;

/// Where a request stands.
#[derive(Debug)]
enum Admission {
    /// The pipeline has not decided yet.
    Pending,
    /// Refused with this decision id and these determining policies; the
    /// response is written.
    Refused { decision_id: DecisionId, policies: Arc<[DeterminingPolicy]> },
    /// Allowed; forwarded once an upstream address is chosen.
    Permitted { permit: Box<Permit>, forwarded_at: Option<Instant> },
}

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    started: Instant,
    /// Checked or made by the gateway: always readable text.
    request_id: HeaderValue,
    admission: Admission,
}

impl Ctx {
    fn permit(&self) -> Option<&Permit> {
        match &self.admission {
            Admission::Permitted { permit, .. } => Some(permit),
            _ => None,
        }
    }

    fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or_default()
    }

    fn decision_id(&self) -> Option<&str> {
        match &self.admission {
            Admission::Pending => None,
            Admission::Refused { decision_id, .. } => Some(decision_id.as_str()),
            Admission::Permitted { permit, .. } => Some(permit.decision().as_str()),
        }
    }
}

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A header value from text the gateway wrote.
fn text_value(text: String) -> Result<HeaderValue> {
    HeaderValue::try_from(text).map_err(|_| Error::explain(ErrorType::InternalError, "unwritable header value"))
}

/// How a failure to proxy is answered, if at all. The upstream's failures are
/// the gateway's 502 and 504 (500 for its own); the client's (a body that is
/// not valid HTTP, or that does not arrive in time) are 400 and 408, never
/// blamed on the upstream; a client that is gone, or no longer reads, is
/// answered nothing.
fn failure_answer(e: &Error) -> Option<Reject> {
    if *e.esource() == ErrorSource::Downstream {
        return match e.etype() {
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed | ErrorType::WriteTimedout => {
                None
            }
            ErrorType::ReadTimedout => Some(Reject::RequestTimeout),
            _ => Some(Reject::BadRequest("the request's body is not valid HTTP".into())),
        };
    }
    Some(match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => Reject::GatewayTimeout,
        ErrorType::InternalError => Reject::Internal,
        _ => Reject::BadGateway,
    })
}

/// The proxy over the gateway's pipeline.
pub struct Proxy {
    gateway: Arc<Gateway>,
}

/// The request headers the gateway reads, named once (a name given as text
/// is parsed again on every look-up).
const TENANT: HeaderName = HeaderName::from_static("x-tenant");

/// A header the gateway reads, as the request has it: its first value and
/// whether another followed.
#[derive(Debug, Clone, Copy, Default)]
struct Seen<'a> {
    first: Option<&'a HeaderValue>,
    repeated: bool,
}

impl<'a> Seen<'a> {
    fn see(&mut self, value: &'a HeaderValue) {
        match self.first {
            Some(_) => self.repeated = true,
            None => self.first = Some(value),
        }
    }

    /// The one value of a header that must not be repeated (a repeated one
    /// is read differently by different servers), if it is there.
    fn single(self, name: &HeaderName) -> Result<Option<&'a str>, Reject> {
        let Some(value) = self.first else {
            return Ok(None);
        };
        if self.repeated {
            return Err(Reject::BadRequest(format!("the `{name}` header is repeated")));
        }
        match value.to_str() {
            Ok(text) => Ok(Some(text)),
            Err(_) if name == http::header::AUTHORIZATION => {
                Err(Reject::Unauthenticated("malformed authorization header"))
            }
            Err(_) => Err(Reject::BadRequest(format!("the `{name}` header is not readable text"))),
        }
    }
}

/// The headers the gateway reads, found in one pass over the request's
/// headers (a look-up by name hashes the name and probes the map, each
/// time).
#[derive(Debug, Default)]
struct Sent<'a> {
    authorization: Seen<'a>,
    tenant: Seen<'a>,
    host: Seen<'a>,
    request_id: Seen<'a>,
    forwarded_for: Seen<'a>,
}

impl<'a> Sent<'a> {
    fn of(headers: &'a http::HeaderMap) -> Self {
        let mut sent = Self::default();
        for (name, value) in headers {
            let seen = if *name == http::header::AUTHORIZATION {
                &mut sent.authorization
            } else if *name == http::header::HOST {
                &mut sent.host
            } else if *name == TENANT {
                &mut sent.tenant
            } else if *name == REQUEST_ID {
                &mut sent.request_id
            } else if *name == FORWARDED_FOR {
                &mut sent.forwarded_for
            } else {
                continue;
            };
            seen.see(value);
        }
        sent
    }
}

/// The request's id: the client's (its first `X-Request-Id`) when
/// well-formed, else a new one.
fn request_id(sent: Seen<'_>) -> HeaderValue {
    if let Some(value) = sent.first.filter(|v| v.to_str().is_ok_and(is_request_id)) {
        return value.clone();
    }
    id_value(DecisionId::new())
}

/// What the pipeline reads of a request; a credential, tenant or host that
/// is repeated or unreadable is refused rather than guessed at.
fn read_incoming<'a>(req: &'a RequestHeader, sent: &Sent<'a>, client_ip: &'a str) -> Result<Incoming<'a>, Reject> {
    let host = match req.uri.host() {
        Some(host) => Some(host),
        None => sent.host.single(&http::header::HOST)?,
    };
    // RFC 9112, 3.2: an HTTP/1.1 request that names no host is refused.
    if host.is_none() && req.version == http::Version::HTTP_11 {
        return Err(Reject::BadRequest("an HTTP/1.1 request needs a `host` header".into()));
    }
    Ok(Incoming {
        method: req.method.as_str(),
        path: req.uri.path(),
        authorization: sent.authorization.single(&http::header::AUTHORIZATION)?,
        tenant_header: sent.tenant.single(&TENANT)?,
        host,
        client_ip,
    })
}

/// Whether the connection stays open after a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    KeepAlive,
    /// The connection is closed after this response: say so, so clients do
    /// not send the next request on it.
    Close,
}

/// Writes `reject` as the response, unless a response has begun (a final
/// status, or a switch of protocols): nothing may be added to one (it would
/// read as the rest of its body); the connection then closes mid-response
/// instead, so the client sees it incomplete.
async fn write_problem(
    session: &mut Session,
    reject: &Reject,
    decision_id: &str,
    explain: bool,
    request_id: &HeaderValue,
    connection: Connection,
) {
    if session.response_written().is_some_and(|r| r.status == 101 || !r.status.is_informational()) {
        return;
    }
    let body = reject.body(decision_id, explain);
    let result: Result<()> = async {
        let mut response = ResponseHeader::build(reject.status(), None)?;
        response.insert_header("content-type", "application/problem+json")?;
        response.insert_header("content-length", body.len().to_string())?;
        response.insert_header("x-request-id", request_id.clone())?;
        if connection == Connection::Close {
            // Pingora then writes `Connection: close` itself.
            session.set_keepalive(None);
        }
        for (name, value) in reject.headers() {
            response.insert_header(name, value)?;
        }
        session.write_response_header(Box::new(response), false).await?;
        session.write_response_body(Some(Bytes::from(body)), true).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot write a refusal");
    }
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    /// None: the gateway never compresses responses (pingora's default is
    /// its compression module, disabled, yet set up for every request).
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx { started: Instant::now(), request_id: HeaderValue::from_static(""), admission: Admission::Pending }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let sent = Sent::of(&req.headers);
        ctx.request_id = request_id(sent.request_id);
        let trusted = &self.gateway.config.trusted_proxies;
        let client_ip = match session.client_addr().and_then(|a| a.as_inet()) {
            Some(peer) => {
                // All the values, in order, when there are any.
                let forwarded = sent.forwarded_for.first.map(|_| req.headers.get_all(FORWARDED_FOR));
                let hops = forwarded.iter().flat_map(|all| all.iter()).filter_map(|v| v.to_str().ok());
                ip_text(client_address(peer.ip(), hops, trusted))
            }
            None => "unknown".to_owned(),
        };
        let admitted = match read_incoming(req, &sent, &client_ip) {
            Ok(incoming) => self.gateway.admit(&incoming).await,
            Err(reject) => Err(Denial::early(reject)),
        };
        match admitted {
            Ok(permit) => {
                ctx.admission = Admission::Permitted { permit: Box::new(permit), forwarded_at: None };
                Ok(false)
            }
            Err(denial) => {
                let policies = match &denial.reject {
                    Reject::Forbidden { policies, .. } => Arc::clone(policies),
                    _ => Arc::default(),
                };
                ctx.admission = Admission::Refused { decision_id: denial.decision_id, policies };
                write_problem(
                    session,
                    &denial.reject,
                    denial.decision_id.as_str(),
                    denial.explain,
                    &ctx.request_id,
                    Connection::KeepAlive,
                )
                .await;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // Only a permitted request has an upstream; anything else is a bug.
        let Admission::Permitted { permit, forwarded_at } = &mut ctx.admission else {
            return Err(Error::explain(ErrorType::InternalError, "no permit"));
        };
        let target = permit.target();
        let address =
            target.next_address().ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no healthy upstream"))?;
        *forwarded_at = Some(Instant::now());
        let mut peer = HttpPeer::new(address, false, String::new());
        peer.options.connection_timeout = Some(target.connect_timeout);
        peer.options.read_timeout = Some(target.read_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let permit = ctx.permit().ok_or_else(|| Error::explain(ErrorType::InternalError, "no permit"))?;
        prepare_upstream_request(upstream_request, permit, &self.gateway.assertions, &ctx.request_id)
            .map_err(|_| Error::explain(ErrorType::InternalError, "cannot prepare the upstream request"))
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Admission::Permitted { permit, forwarded_at: Some(at) } = &ctx.admission {
            self.gateway.route_metrics(Some(permit.route().route)).upstream(at.elapsed());
        }
        let request_id = ctx.request_id.clone();
        let standing = ctx.permit().and_then(|p| p.within.0.as_ref());
        let rate_limit = match standing {
            Some(s) => Some((text_value(s.policy_field())?, text_value(s.field())?)),
            None => None,
        };
        edit_parts(response, http::Response::new(()).into_parts().0, |parts: &mut http::response::Parts| {
            let headers = &mut parts.headers;
            if let Some((policy, field)) = rate_limit {
                headers.insert(RATELIMIT_POLICY, policy);
                headers.insert(RATELIMIT, field);
            }
            headers.insert(REQUEST_ID, request_id);
        });
        Ok(())
    }

    /// Answers a failure with a problem (unless the client is gone, or the
    /// upstream's response has begun: see `write_problem`).
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let answer = failure_answer(e);
        if let Some(reject) = &answer {
            let decision = ctx.decision_id().unwrap_or_default().to_owned();
            write_problem(session, reject, &decision, false, &ctx.request_id, Connection::Close).await;
        }
        FailToProxy { error_code: answer.as_ref().map_or(0, Reject::status), can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let permit = ctx.permit();
        let route = self.gateway.route_metrics(permit.map(|p| p.route().route));
        let decision = match &ctx.admission {
            Admission::Permitted { .. } => "allow",
            Admission::Refused { .. } => "deny",
            Admission::Pending => "none",
        };
        // One reading of the clock for the histogram and the line.
        let took = ctx.started.elapsed();
        route.request(status, decision, took);
        let req = session.req_header();
        crate::access::record(&AccessLine {
            request_id: ctx.request_id(),
            method: req.method.as_str(),
            path: req.uri.path(),
            status,
            decision: ctx.decision_id().unwrap_or(""),
            tenant: permit.and_then(|p| p.tenant()).map_or("", |t| t.id.as_str()),
            principal: permit.map(Permit::principal),
            route: permit.map_or("", |p| &p.route().action),
            policies: match &ctx.admission {
                Admission::Permitted { permit, .. } => permit.policies(),
                Admission::Refused { policies, .. } => policies,
                Admission::Pending => &[],
            },
            error: error.map(|e| e as &dyn std::fmt::Display),
            latency_us: took.as_micros() as u64,
        });
    }
}

/// `/metrics`: the Prometheus text exposition, served by pingora itself.
struct Metrics;

#[async_trait]
impl ServeHttp for Metrics {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let (status, content_type, body) = if session.req_header().uri.path() == "/metrics" {
            (200, "text/plain; version=0.0.4", crate::metrics::render().into_bytes())
        } else {
            (404, "text/plain", b"not found\n".to_vec())
        };
        http::Response::builder()
            .status(status)
            .header("content-type", content_type)
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}

/// Stops the server when the watched flag turns true.
struct WatchShutdown(tokio::sync::watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for WatchShutdown {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::FastShutdown
    }
}

/// Where the gateway serves.
#[derive(Debug, Clone, Copy)]
pub struct Listen {
    /// The public address of the proxy.
    pub proxy: SocketAddr,
    /// The admin address serving `/metrics`.
    pub metrics: SocketAddr,
}

/// Runs the gateway until `shutdown` turns true: the proxy on its own
/// workers (see [`crate::workers`]; an error if its address cannot be
/// bound), and in a thread of its own pingora's server, with `/metrics` and
/// a health check per upstream. The thread returned ends when both have
/// stopped.
pub fn spawn(
    gateway: Arc<Gateway>,
    listen: Listen,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // One proxy worker per core (two on this project's 2-core machines).
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(0),
        // The same grace as the proxy's workers give their connections.
        graceful_shutdown_timeout_seconds: Some(crate::workers::GRACE.as_secs()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    for target in gateway.targets.values() {
        let checks = GenBackgroundService::new(format!("health check {}", target.name), Arc::clone(&target.balancer));
        server.add_service(checks);
    }
    let mut metrics = Service::new("metrics".into(), Metrics);
    metrics.add_tcp(&listen.metrics.to_string());
    // A scrape every few seconds: one thread, not one per core beside the
    // proxy's workers.
    metrics.threads = Some(1);
    server.add_service(metrics);
    let apps = (0..threads)
        .map(|_| Arc::new(pingora::proxy::http_proxy(&server.configuration, Proxy { gateway: Arc::clone(&gateway) })))
        .collect();
    let workers = crate::workers::serve(apps, listen.proxy, crate::metrics::worker_connections, shutdown.clone())?;
    std::thread::Builder::new().name("tollgate-gateway".into()).spawn(move || {
        server.run(RunArgs { shutdown_signal: Box::new(WatchShutdown(shutdown)) });
        workers.join();
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: Box<Error>) -> Option<u16> {
        failure_answer(&e).map(|r| r.status())
    }

    #[test]
    fn failures_are_answered_as_whoever_caused_them() {
        // The upstream's, or the gateway's own.
        assert_eq!(status(Error::new_up(ErrorType::ConnectRefused)), Some(502));
        assert_eq!(status(Error::new_up(ErrorType::InvalidHTTPHeader)), Some(502));
        assert_eq!(status(Error::new_up(ErrorType::ConnectTimedout)), Some(504));
        assert_eq!(status(Error::new_up(ErrorType::ReadTimedout)), Some(504));
        assert_eq!(status(Error::new(ErrorType::ConnectNoRoute)), Some(502));
        assert_eq!(status(Error::new(ErrorType::InternalError)), Some(500));
        // The client's: its body is not valid HTTP, or too slow.
        assert_eq!(status(Error::new_down(ErrorType::InvalidHTTPHeader)), Some(400));
        assert_eq!(status(Error::new_down(ErrorType::new("InvalidChunk"))), Some(400));
        assert_eq!(status(Error::new_down(ErrorType::ReadTimedout)), Some(408));
        // A client that is gone or does not read is answered nothing.
        for gone in [ErrorType::ReadError, ErrorType::WriteError, ErrorType::ConnectionClosed, ErrorType::WriteTimedout]
        {
            assert_eq!(status(Error::new_down(gone.clone())), None, "{gone:?}");
        }
    }
}
