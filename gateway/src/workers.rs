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
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::{DEFAULT_L4_WRITE_BUFFER_SIZE, Stream};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, TimingDigest, UniqueID,
    UniqueIDType,
};
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
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
    let mut next = app.process_new(Box::new(client_stream(tcp, peer)), shutdown).await;
    while let Some(stream) = next {
        next = app.process_new(stream, shutdown).await;
    }
}

/// The connection `tcp` from `peer`, as pingora's listeners hand theirs to
/// an app: without delay, with the peer's address recorded, its writes
/// gathered.
fn client_stream(tcp: TcpStream, peer: SocketAddr) -> Gathered {
    let mut stream = Stream::from(tcp);
    if let Err(e) = stream.set_nodelay() {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    // Where the request came from, as pingora's listeners record it.
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    let _ = digest.peer_addr.set(Some(peer.into()));
    stream.set_socket_digest(digest);
    Gathered(BufWriter::with_capacity(DEFAULT_L4_WRITE_BUFFER_SIZE, stream))
}

/// A client connection whose writes are gathered, up to about one TCP
/// segment, until pingora flushes them, as on pingora's own listeners (a
/// stream made from a socket writes each piece at once): a response's head
/// and a small body leave in one send, waking the client once, where they
/// took two. pingora flushes as its listeners need: a response when it
/// ends, a head without a length at once, each chunk of a chunked body.
#[derive(Debug)]
struct Gathered(BufWriter<Stream>);

impl AsyncRead for Gathered {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gathered {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Gathered {
    /// What is gathered is written first.
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(&mut self.0).await {
            tracing::debug!(error = %e, "cannot shut a connection down");
        }
    }
}

impl UniqueID for Gathered {
    fn id(&self) -> UniqueIDType {
        self.0.get_ref().id()
    }
}

impl Ssl for Gathered {}

#[async_trait]
impl Peek for Gathered {
    async fn try_peek(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        self.0.get_mut().try_peek(buf).await
    }
}

impl GetTimingDigest for Gathered {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.0.get_ref().get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.0.get_ref().get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.0.get_ref().get_write_pending_time()
    }
}

impl GetProxyDigest for Gathered {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.0.get_ref().get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.0.get_mut().set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Gathered {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.0.get_ref().get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.0.get_mut().set_socket_digest(digest);
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

    /// A connection's accepted end, as the workers serve it, and the
    /// client's end.
    async fn gathered_pair() -> (Gathered, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        let served = client_stream(accepted, peer);
        let recorded = served.get_socket_digest().and_then(|d| d.peer_addr().cloned());
        assert_eq!(recorded, Some(client.local_addr().unwrap().into()), "the peer's address is recorded");
        (served, client)
    }

    /// Whether anything has reached `client` within 50 ms.
    async fn anything_arrives(client: &TcpStream) -> bool {
        tokio::time::timeout(Duration::from_millis(50), client.readable()).await.is_ok()
    }

    /// A response's head and body are sent together when pingora flushes,
    /// not piece by piece as they are written.
    #[tokio::test]
    async fn writes_leave_together_when_flushed() {
        use tokio::io::AsyncReadExt as _;
        let (mut server, mut client) = gathered_pair().await;
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n";
        server.write_all(head).await.unwrap();
        server.write_all(b"ok\n").await.unwrap();
        assert!(!anything_arrives(&client).await, "the head left before the flush");
        server.flush().await.unwrap();
        let mut got = vec![0; head.len() + 3];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(&got[..head.len()], head);
        assert_eq!(&got[head.len()..], b"ok\n");
        // More than the buffer holds is not held back.
        let large = vec![b'x'; 4 * DEFAULT_L4_WRITE_BUFFER_SIZE];
        server.write_all(&large).await.unwrap();
        assert!(anything_arrives(&client).await, "a large write waited for a flush");
    }

    /// What is gathered is sent before the connection is shut down.
    #[tokio::test]
    async fn a_shutdown_sends_what_is_gathered_first() {
        use tokio::io::AsyncReadExt as _;
        let (mut server, mut client) = gathered_pair().await;
        server.write_all(b"last words").await.unwrap();
        Shutdown::shutdown(&mut server).await;
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, b"last words");
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
