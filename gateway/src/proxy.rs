//! The pingora side: a `ProxyHttp` whose `request_filter` runs the pipeline
//! and answers refusals itself, so `upstream_peer` only ever runs with a
//! `Permit`; `upstream_request_filter` strips client-sent identity headers
//! and adds ours; `logging` writes one line per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::lb::LoadBalancer;
use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;

use crate::pipeline::{Gateway, IDENTITY_HEADER_PREFIX, Incoming};
use crate::policy::Permit;
use crate::reject::Reject;

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    started: Instant,
    request_id: String,
    permit: Option<Permit>,
    decision_id: Option<String>,
    /// The upstream chosen and when.
    upstream: Option<(String, Instant)>,
}

/// How often each upstream address is health checked (TCP connect).
const HEALTH_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The proxy: the gateway and a health-checked round-robin balancer per upstream.
pub struct Proxy {
    gateway: Arc<Gateway>,
    balancers: HashMap<String, Arc<LoadBalancer<RoundRobin>>>,
}

fn header<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session.req_header().headers.get(name).and_then(|v| v.to_str().ok())
}

fn request_id(session: &Session) -> String {
    tollgate_backend::request_id_or_new(header(session, "x-request-id"))
}

/// Whether the connection stays open after a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connection {
    KeepAlive,
    /// The connection is closed after this response: say so, so clients do
    /// not send the next request on it.
    Close,
}

async fn write_problem(
    session: &mut Session,
    reject: &Reject,
    decision_id: &str,
    explain: bool,
    request_id: &str,
    connection: Connection,
) {
    let body = reject.body(decision_id, explain);
    let result: Result<()> = async {
        let mut response = ResponseHeader::build(reject.status(), None)?;
        response.insert_header("content-type", "application/problem+json")?;
        response.insert_header("content-length", body.len().to_string())?;
        response.insert_header("x-request-id", request_id)?;
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

    fn new_ctx(&self) -> Ctx {
        Ctx { started: Instant::now(), request_id: String::new(), permit: None, decision_id: None, upstream: None }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.request_id = request_id(session);
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        let req = session.req_header();
        let host = req.uri.host().or_else(|| header(session, "host"));
        let incoming = Incoming {
            method: req.method.as_str(),
            path: req.uri.path(),
            authorization: header(session, "authorization"),
            tenant_header: header(session, "x-tenant"),
            host,
            client_ip: &client_ip,
        };
        match self.gateway.admit(&incoming).await {
            Ok(permit) => {
                ctx.decision_id = Some(permit.decision_id().to_owned());
                ctx.permit = Some(permit);
                Ok(false)
            }
            Err(denial) => {
                ctx.decision_id = Some(denial.decision_id.clone());
                write_problem(
                    session,
                    &denial.reject,
                    &denial.decision_id,
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
        let permit = ctx.permit.as_ref().ok_or_else(|| Error::explain(ErrorType::InternalError, "no permit"))?;
        let route = self
            .gateway
            .config
            .routes
            .get(permit.route().route)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "route vanished"))?;
        let upstream = self
            .gateway
            .config
            .upstreams
            .get(&route.upstream)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "upstream vanished"))?;
        let balancer = self
            .balancers
            .get(&upstream.name)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "balancer vanished"))?;
        // Round robin over the addresses that pass their health check.
        let backend = balancer
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no healthy upstream"))?;
        let address = backend
            .addr
            .as_inet()
            .copied()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "not an inet address"))?;
        ctx.upstream = Some((upstream.name.clone(), Instant::now()));
        let mut peer = HttpPeer::new(address, false, String::new());
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.read_timeout = Some(upstream.read_timeout);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let permit = ctx.permit.as_ref().ok_or_else(|| Error::explain(ErrorType::InternalError, "no permit"))?;
        let spoofed: Vec<String> = upstream_request
            .headers
            .keys()
            .map(|n| n.as_str().to_owned())
            .filter(|n| n.starts_with(IDENTITY_HEADER_PREFIX))
            .collect();
        for name in spoofed {
            upstream_request.remove_header(&name);
        }
        // The upstream gets exactly the path that was routed.
        let query = upstream_request.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let uri = format!("{}{query}", permit.route().path)
            .parse()
            .map_err(|_| Error::explain(ErrorType::InternalError, "normalized path is not a uri"))?;
        upstream_request.set_uri(uri);
        let headers = self
            .gateway
            .identity_headers(permit)
            .map_err(|_| Error::explain(ErrorType::InternalError, "cannot sign"))?;
        for (name, value) in headers {
            upstream_request.insert_header(name, value)?;
        }
        upstream_request.insert_header("x-request-id", ctx.request_id.clone())?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some((name, chosen)) = &ctx.upstream {
            crate::metrics::upstream(name, chosen.elapsed().as_secs_f64());
        }
        response.insert_header("x-request-id", ctx.request_id.clone())?;
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let reject = match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => Reject::GatewayTimeout,
            ErrorType::InternalError => Reject::Internal,
            _ => Reject::BadGateway,
        };
        let decision = ctx.decision_id.clone().unwrap_or_default();
        write_problem(session, &reject, &decision, false, &ctx.request_id, Connection::Close).await;
        FailToProxy { error_code: reject.status(), can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let route = ctx
            .permit
            .as_ref()
            .and_then(|p| self.gateway.config.routes.get(p.route().route))
            .map_or("none", |r| r.name.as_str());
        let decision = match (&ctx.permit, &ctx.decision_id) {
            (Some(_), _) => "allow",
            (None, Some(_)) => "deny",
            (None, None) => "none",
        };
        crate::metrics::request(route, status, decision, ctx.started.elapsed().as_secs_f64());
        let req = session.req_header();
        tracing::info!(
            request_id = %ctx.request_id,
            method = %req.method,
            path = %req.uri.path(),
            status,
            decision = ctx.decision_id.as_deref().unwrap_or(""),
            tenant = ctx.permit.as_ref().and_then(|p| p.tenant()).map_or("", |t| t.id.as_str()),
            principal = ctx.permit.as_ref().map_or("", |p| p.principal()),
            route = ctx.permit.as_ref().map_or("", |p| p.route().action.as_str()),
            policies = ?ctx.permit.as_ref().map(|p| p.policies().to_vec()).unwrap_or_default(),
            error = error.map(|e| e.to_string()).unwrap_or_default(),
            latency_us = ctx.started.elapsed().as_micros() as u64,
            "gateway request"
        );
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

/// Runs the gateway on `listen` in a thread of its own (pingora owns its
/// runtimes) until `shutdown` turns true.
pub fn spawn(
    gateway: Arc<Gateway>,
    listen: SocketAddr,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let conf = ServerConf {
        threads: 2,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut balancers = HashMap::new();
    for upstream in gateway.config.upstreams.values() {
        let mut balancer = LoadBalancer::<RoundRobin>::try_from_iter(upstream.addresses.iter().copied())?;
        balancer.set_health_check(TcpHealthCheck::new());
        balancer.health_check_frequency = Some(HEALTH_CHECK_EVERY);
        let checker = background_service(&format!("health check {}", upstream.name), balancer);
        balancers.insert(upstream.name.clone(), checker.task());
        server.add_service(checker);
    }
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Proxy { gateway, balancers });
    service.add_tcp(&listen.to_string());
    server.add_service(service);
    std::thread::Builder::new()
        .name("tollgate-gateway".into())
        .spawn(move || server.run(RunArgs { shutdown_signal: Box::new(WatchShutdown(shutdown)) }))
}
