//! The proxy's workers: one single-threaded runtime per core, each serving
//! the connections placed on it for their whole life, every new connection
//! placed on the worker serving the fewest (the next in turn among equals).
//! A connection's requests, and their memory, stay on one core.
//!
//! pingora's own runtimes do one of two things instead: move tasks between
//! threads (work stealing: a connection's requests hop between cores, and
//! idle threads are woken to steal), or place each connection on a random
//! thread for its life (so 8 connections are often split 6 to 2, one core
//! idle while the other queues). Its proxy app serves the connections
//! accepted here as it serves its own (`ServerApp::process_new`, each
//! kept-alive request in turn); each worker has an app of its own, so that
//! its upstream connections (the app's pool) are polled by the worker that
//! uses them too, never woken through another's. pingora's server still
//! runs `/metrics` and the health checks.
//!
//! At shutdown the listener closes first, connections end after the
//! request they are serving (idle ones at once), and those still open after
//! [`GRACE`] are dropped with their worker.

use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::{GetSocketDigest as _, SocketDigest};
use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// How long connections still open at shutdown have to finish.
pub const GRACE: Duration = Duration::from_secs(1);
/// Connections waiting to be accepted (the kernel caps it at
/// `net.core.somaxconn`), as pingora's listeners ask for.
const BACKLOG: u32 = 65_535;

/// How many connections each worker serves, and whose turn is next among
/// those serving the fewest.
#[derive(Debug)]
struct Load {
    serving: Vec<IntGauge>,
    turn: AtomicUsize,
}

impl Load {
    /// The worker serving the fewest connections (the first from this
    /// turn's among equals), counted as serving one more.
    fn place(&self) -> usize {
        let n = self.serving.len();
        let first = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        let chosen = (0..n).map(|k| (first + k) % n).min_by_key(|&i| self.serving[i].get()).unwrap_or(0);
        self.serving[chosen].inc();
        chosen
    }

    fn ended(&self, worker: usize) {
        self.serving[worker].dec();
    }

    fn total(&self) -> i64 {
        self.serving.iter().map(IntGauge::get).sum()
    }
}

/// A worker's runtime and the app it serves its connections with.
struct Worker<A> {
    runtime: tokio::runtime::Handle,
    app: Arc<A>,
}

/// The workers and their load.
struct Placement<A> {
    workers: Vec<Worker<A>>,
    load: Load,
}

/// A connection being served by `worker`: counted until dropped (its
/// task ended, or dropped with its worker).
struct Serving<A> {
    placement: Arc<Placement<A>>,
    worker: usize,
}

impl<A> Drop for Serving<A> {
    fn drop(&mut self) {
        self.placement.load.ended(self.worker);
    }
}

/// The running workers.
#[derive(Debug)]
pub struct Workers {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Waits until every worker has stopped.
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Serves connections to `listen` with a worker per app in `apps` (at
/// least one) until `shutdown` turns true (or its sender is gone), each
/// worker's connections counted in `serving(worker)`. Returns once the
/// address is bound, or why it cannot be.
pub fn serve<A>(
    apps: Vec<Arc<A>>,
    listen: SocketAddr,
    serving: impl Fn(usize) -> IntGauge,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<Workers>
where
    A: ServerApp + Send + Sync + 'static,
{
    // Workers run until this turns true, or is dropped (by an error below).
    let (stop, stopped) = watch::channel(false);
    if apps.is_empty() {
        return Err(std::io::Error::other("no worker to serve with"));
    }
    let mut workers = Vec::new();
    let mut joins = Vec::new();
    for (i, app) in apps.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        workers.push(Worker { runtime: runtime.handle().clone(), app });
        let mut stopped = stopped.clone();
        let thread = std::thread::Builder::new().name(format!("tollgate-worker-{i}")).spawn(move || {
            runtime.block_on(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            });
            // The runtime is dropped here, with the connections it still serves.
        })?;
        joins.push(thread);
    }
    let listener = {
        // Registered with the first worker, which accepts.
        let _entered = workers[0].runtime.enter();
        let socket = if listen.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() };
        socket
            .and_then(|socket| {
                socket.set_reuseaddr(true)?;
                socket.bind(listen)?;
                socket.listen(BACKLOG)
            })
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?
    };
    let load = Load { serving: (0..workers.len()).map(serving).collect(), turn: AtomicUsize::new(0) };
    let placement = Arc::new(Placement { workers, load });
    placement.workers[0].runtime.spawn(accept(listener, Arc::clone(&placement), shutdown, stop));
    Ok(Workers { threads: joins })
}

/// Accepts connections and places each on a worker until `shutdown`; then
/// lets those open finish within [`GRACE`] and stops the workers.
async fn accept<A>(
    listener: TcpListener,
    placement: Arc<Placement<A>>,
    mut shutdown: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
) where
    A: ServerApp + Send + Sync + 'static,
{
    // What the app is told of the shutdown: a connection is not kept
    // alive past it.
    let (ending, ending_watch) = watch::channel(false);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((tcp, peer)) => start(&placement, tcp, peer, &ending_watch),
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection");
                // Out of file descriptors (ENFILE, EMFILE): accepting again
                // at once would fail again at once; connections close meanwhile.
                if matches!(e.raw_os_error(), Some(23 | 24)) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    let _ = ending.send(true);
    // Connections idle between requests end now.
    for worker in &placement.workers {
        worker.app.cleanup().await;
    }
    let deadline = Instant::now() + GRACE;
    while placement.load.total() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(true);
}

/// Serves the connection `tcp` from `peer` on the worker serving the fewest.
fn start<A>(placement: &Arc<Placement<A>>, tcp: TcpStream, peer: SocketAddr, shutdown: &watch::Receiver<bool>)
where
    A: ServerApp + Send + Sync + 'static,
{
    // Taken off the accepting worker's poller, to be polled by its own.
    let tcp = match tcp.into_std() {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand over a connection");
            return;
        }
    };
    let worker = placement.load.place();
    let serving = Serving { placement: Arc::clone(placement), worker };
    let chosen = &placement.workers[worker];
    let (app, shutdown) = (Arc::clone(&chosen.app), shutdown.clone());
    chosen.runtime.spawn(async move {
        let _serving = serving;
        match TcpStream::from_std(tcp) {
            Ok(tcp) => serve_connection(&app, tcp, peer, &shutdown).await,
            Err(e) => tracing::warn!(error = %e, "cannot take over a connection"),
        }
    });
}

/// Each request of a connection in turn, as pingora's own services do.
async fn serve_connection<A>(app: &Arc<A>, tcp: TcpStream, peer: SocketAddr, shutdown: &watch::Receiver<bool>)
where
    A: ServerApp + Send + Sync + 'static,
{
    let mut stream = Stream::from(tcp);
    if let Err(e) = stream.set_nodelay() {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    // Where the request came from, as pingora's listeners record it.
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));
    stream.set_socket_digest(digest);
    let mut next = app.process_new(Box::new(stream), shutdown).await;
    while let Some(stream) = next {
        next = app.process_new(stream, shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(workers: usize) -> Load {
        Load {
            serving: (0..workers).map(|i| IntGauge::new(format!("w{i}"), "test").unwrap()).collect(),
            turn: AtomicUsize::new(0),
        }
    }

    fn counts(load: &Load) -> Vec<i64> {
        load.serving.iter().map(IntGauge::get).collect()
    }

    /// Connections go to the worker serving the fewest, in turn among
    /// equals, so any number of them is spread as evenly as it can be.
    #[test]
    fn each_connection_goes_to_the_worker_serving_the_fewest() {
        let load = load(2);
        let placed: Vec<usize> = (0..8).map(|_| load.place()).collect();
        assert_eq!(placed, [0, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!(counts(&load), [4, 4]);
        // Three of worker 0's end: the next three are its.
        for _ in 0..3 {
            load.ended(0);
        }
        assert_eq!((0..3).map(|_| load.place()).collect::<Vec<_>>(), [0, 0, 0]);
        assert_eq!(counts(&load), [4, 4]);
        assert_eq!(load.total(), 8);

        let load = super::tests::load(3);
        for _ in 0..7 {
            load.place();
        }
        assert_eq!(counts(&load), [3, 2, 2]);
    }
}
