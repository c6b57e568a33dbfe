//! Bare pingora passthrough: the floor the gateway is measured against. It
//! forwards every request to one upstream with nothing in between.
//!
//! Usage: `passthrough LISTEN UPSTREAM THREADS [workers]`, e.g.
//! `passthrough 127.0.0.1:18081 127.0.0.1:18080 2`. With `workers`, the
//! same proxy runs on the gateway's own workers (`tollgate_gateway::workers`)
//! instead of pingora's listening service and runtime: the floor of the
//! pipeline's own cost, on the server the gateway runs on.

/// The gateway's allocator: the passthrough is the measure of pingora
/// itself, so it runs on what the gateway runs on (on glibc's malloc its
/// two workers wait on the arena locks, and it spends 15-20% more CPU per
/// request: bench/RESULTS.md, 2026-11-28).
#[global_allocator]
static ALLOCATOR: tollgate_allocator::MiMalloc = tollgate_allocator::MiMalloc;

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;

struct Passthrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (args, on_workers) = match args.as_slice() {
        [head @ .., last] if last == "workers" => (head, true),
        all => (all, false),
    };
    let parsed = match args {
        [_, listen, upstream, threads] => {
            match (listen.parse::<SocketAddr>(), upstream.parse::<SocketAddr>(), threads.parse::<usize>()) {
                (Ok(l), Ok(u), Ok(t)) if t > 0 => Some((l, u, t)),
                _ => None,
            }
        }
        _ => None,
    };
    let Some((listen, upstream, threads)) = parsed else {
        eprintln!("usage: passthrough LISTEN UPSTREAM THREADS [workers] (addresses like 127.0.0.1:8080)");
        std::process::exit(2);
    };
    let conf = ServerConf { threads, ..ServerConf::default() };
    if on_workers {
        let conf = Arc::new(conf);
        let apps =
            (0..threads).map(|_| Arc::new(pingora::proxy::http_proxy(&conf, Passthrough { upstream }))).collect();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let workers = match tollgate_gateway::workers::serve(
            apps,
            listen,
            tollgate_gateway::metrics::worker_connections,
            shutdown,
        ) {
            Ok(workers) => workers,
            Err(e) => {
                eprintln!("error: cannot serve on {listen}: {e}");
                std::process::exit(1);
            }
        };
        until_signalled();
        let _ = stop.send(true);
        workers.join();
        return;
    }
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Passthrough { upstream });
    service.add_tcp(&listen.to_string());
    server.add_service(service);
    server.run_forever();
}

/// Returns on SIGINT or SIGTERM (handled here: a script's background job
/// starts with SIGINT ignored, and pingora's own server handles both itself).
fn until_signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    runtime.block_on(async {
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => eprintln!("error: cannot handle signals; stopping"),
        }
    });
}
