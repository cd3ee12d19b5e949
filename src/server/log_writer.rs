//! Where log lines go: request threads append each formatted line to a shared buffer, and one
//! thread writes the buffer out. That thread wakes at most once per [`GATHER`] while lines
//! keep coming, instead of once per line: a thread woken for every line (as through a
//! channel whose receiver sleeps between lines) costs a context switch and a `futex` call on
//! both sides of each request, which measured more than the line itself at a few thousand
//! requests per second. Never lossy: when the buffer is full a request thread waits for room.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writing thread lets lines gather after writing some out. Lines reach the
/// output at most this much later than without it.
const GATHER: Duration = Duration::from_millis(10);

/// Bytes queued before request threads wait for the writing thread (about 4,000 request
/// lines). The buffer grows only as far as lines actually queue.
const QUEUE_BYTES: usize = 1 << 20;

struct Queue {
    lines: Vec<u8>,
    /// The writing thread waits on `wake` and must be woken for new lines.
    asleep: bool,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    room: Condvar,
    limit: usize,
}

impl Shared {
    /// A thread that panicked while holding the lock left the queue as valid bytes, so
    /// logging goes on.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &[u8]) {
        let mut queue = self.lock();
        while queue.lines.len() >= self.limit && !queue.closed {
            queue = self
                .room
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
        queue.lines.extend_from_slice(line);
        if queue.asleep {
            queue.asleep = false;
            self.wake.notify_one();
        }
    }

    /// The writing thread: takes everything queued, writes it in one go, then lets the next
    /// lines gather; sleeps on `wake` only when nothing came meanwhile.
    fn write_out(&self, mut out: impl Write, gather: Duration) {
        let mut spare = Vec::new();
        loop {
            let closed = {
                let mut queue = self.lock();
                while queue.lines.is_empty() && !queue.closed {
                    queue.asleep = true;
                    queue = self
                        .wake
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                std::mem::swap(&mut queue.lines, &mut spare);
                self.room.notify_all();
                queue.closed
            };
            // A log that cannot be written has nowhere to report it.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
            if closed {
                if self.lock().lines.is_empty() {
                    return;
                }
                continue;
            }
            // Shutdown interrupts the wait; new lines do not, as `asleep` is false.
            let queue = self.lock();
            if !queue.closed {
                let _ = self.wake.wait_timeout(queue, gather);
            }
        }
    }
}

/// The `MakeWriter` given to the tracing subscriber. tracing-subscriber writes each event as
/// one `write_all` of the whole line, so lines never interleave.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Keeps the writing thread running; dropping it writes out everything queued and ends it.
#[must_use = "dropping it stops the log writer"]
pub struct LogFlush {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        {
            let mut queue = self.shared.lock();
            queue.closed = true;
            self.shared.wake.notify_one();
            self.shared.room.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the thread that writes lines to `out`.
pub fn start(out: impl Write + Send + 'static) -> std::io::Result<(LogWriter, LogFlush)> {
    start_with(out, QUEUE_BYTES, GATHER)
}

fn start_with(
    out: impl Write + Send + 'static,
    limit: usize,
    gather: Duration,
) -> std::io::Result<(LogWriter, LogFlush)> {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            lines: Vec::new(),
            asleep: false,
            closed: false,
        }),
        wake: Condvar::new(),
        room: Condvar::new(),
        limit,
    });
    let worker = shared.clone();
    let thread = std::thread::Builder::new()
        .name("lanyard-log".into())
        .spawn(move || worker.write_out(out, gather))?;
    Ok((
        LogWriter {
            shared: shared.clone(),
        },
        LogFlush {
            shared,
            thread: Some(thread),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An output the test can read while the writing thread owns its clone.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        fn wait_for(&self, wanted: &str) {
            let started = Instant::now();
            while !self.text().contains(wanted) {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "{wanted:?} never written; got {:?}",
                    self.text()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    #[test]
    fn every_line_of_every_thread_is_written_whole_and_in_its_threads_order() {
        let out = Captured::default();
        let (writer, flush) = start_with(out.clone(), 256, Duration::from_millis(1)).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        writer
                            .write_all(format!("thread {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(flush);
        let text = out.text();
        for t in 0..4 {
            let prefix = format!("thread {t} line ");
            let seen: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(seen, (0..2_000).collect::<Vec<_>>(), "thread {t}");
        }
        assert_eq!(text.lines().count(), 8_000);
    }

    /// The writing thread sleeps when nothing comes, and a later line wakes it.
    #[test]
    fn a_line_after_a_quiet_spell_is_written_without_waiting_for_shutdown() {
        let out = Captured::default();
        let (mut writer, _flush) = start(out.clone()).unwrap();
        writer.write_all(b"first\n").unwrap();
        out.wait_for("first\n");
        std::thread::sleep(Duration::from_millis(50));
        writer.write_all(b"after a pause\n").unwrap();
        out.wait_for("after a pause\n");
    }

    #[test]
    fn dropping_the_guard_writes_out_what_is_queued() {
        let out = Captured::default();
        let (mut writer, flush) =
            start_with(out.clone(), QUEUE_BYTES, Duration::from_secs(5)).unwrap();
        writer.write_all(b"one\n").unwrap();
        out.wait_for("one\n");
        // The thread now lets lines gather for five seconds; shutdown must not wait for it.
        writer.write_all(b"two\n").unwrap();
        let started = Instant::now();
        drop(flush);
        assert_eq!(out.text(), "one\ntwo\n");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
}
