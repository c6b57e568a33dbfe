//! Where log lines go: appended to a buffer in memory, which a thread of its
//! own writes to stderr in one system call every [`FLUSH_EVERY`]. Logging a
//! line costs the thread that logs it a copy under a lock held only for that
//! copy: no system call and no wake-up of another thread, so a request's
//! access line never waits on the terminal, a pipe or a slow disk. When the
//! writer falls behind and the buffer is full, new lines are dropped and
//! counted rather than making anyone wait. At most [`FLUSH_EVERY`] of lines
//! is lost if the process is killed; the guard writes the rest on a normal
//! exit.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How often the buffer is written out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// The most the buffer holds before lines are dropped.
pub const BUFFER_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, Default)]
struct Shared {
    lines: Mutex<Vec<u8>>,
    dropped: AtomicUsize,
    stop: AtomicBool,
}

impl Shared {
    fn append(&self, line: &[u8]) {
        match self.lines.lock() {
            Ok(mut lines) if lines.len() + line.len() <= BUFFER_LIMIT => lines.extend_from_slice(line),
            // Full (or a writer panicked holding the lock): dropped, counted.
            _ => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes what is buffered to `out`, keeping the emptied buffer's
    /// allocation for the next round in `spare`.
    fn write_out(&self, spare: &mut Vec<u8>, out: &mut impl Write) {
        if let Ok(mut lines) = self.lines.lock() {
            std::mem::swap(&mut *lines, spare);
        }
        if !spare.is_empty() {
            // Nowhere to report a failure to write the log.
            let _ = out.write_all(spare).and_then(|()| out.flush());
            spare.clear();
        }
    }
}

/// The `MakeWriter` of the log subscriber.
#[derive(Debug, Clone)]
pub struct BatchWriter(Arc<Shared>);

/// One event's writer: the formatter writes each line in one call.
#[derive(Debug)]
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line(&self.0)
    }
}

impl BatchWriter {
    /// Appends one whole line (or drops and counts it when the buffer is full).
    pub fn append(&self, line: &[u8]) {
        self.0.append(line);
    }

    /// How many lines were dropped because the buffer was full.
    pub fn dropped(&self) -> usize {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

/// Writes the rest and stops the writer thread when dropped.
#[derive(Debug)]
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// A writer to `out` and its guard; the thread is named `thread_name`.
pub fn batch_writer<W: Write + Send + 'static>(out: W, thread_name: &str) -> std::io::Result<(BatchWriter, Guard)> {
    let shared = Arc::new(Shared::default());
    let writer = Arc::clone(&shared);
    let thread = std::thread::Builder::new().name(thread_name.to_owned()).spawn(move || {
        let mut out = out;
        let mut spare = Vec::new();
        while !writer.stop.load(Ordering::Relaxed) {
            std::thread::park_timeout(FLUSH_EVERY);
            writer.write_out(&mut spare, &mut out);
        }
        writer.write_out(&mut spare, &mut out);
    })?;
    Ok((BatchWriter(Arc::clone(&shared)), Guard { shared, thread: Some(thread) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_are_written_in_order_within_a_flush_and_the_rest_at_the_end() {
        let sink = Sink::default();
        let (writer, guard) = batch_writer(sink.clone(), "test-log").unwrap();
        writer.make_writer().write_all(b"one\n").unwrap();
        writer.make_writer().write_all(b"two\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().len() < 8 {
            assert!(std::time::Instant::now() < deadline, "nothing written within 5 s");
            std::thread::sleep(FLUSH_EVERY);
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"one\ntwo\n");
        writer.make_writer().write_all(b"three\n").unwrap();
        drop(guard);
        assert_eq!(&*sink.0.lock().unwrap(), b"one\ntwo\nthree\n", "the guard writes what is left");
    }

    #[test]
    fn a_full_buffer_drops_and_counts_lines() {
        // No writer thread: nothing is taken out of the buffer.
        let writer = BatchWriter(Arc::new(Shared::default()));
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..BUFFER_LIMIT / line.len() {
            writer.make_writer().write_all(&line).unwrap();
        }
        assert_eq!(writer.dropped(), 0);
        writer.make_writer().write_all(b"one more\n").unwrap();
        writer.make_writer().write_all(b"and another\n").unwrap();
        assert_eq!(writer.dropped(), 2);
        assert_eq!(writer.0.lines.lock().unwrap().len(), BUFFER_LIMIT);
    }
}
