//! Log lines written to stderr by a thread of their own, so that no request, reconcile or
//! probe waits on stderr. In a cluster stderr is a pipe the container runtime reads; when
//! that reader falls behind (a slow node disk, a stalled shim) a plain `write` blocks, and
//! with it the tokio worker that logged: every admission review on that worker stalls
//! until the API server's webhook timeout fails it.
//!
//! Invariants:
//! - logging never blocks: a line is handed over with `try_send`; when [`CAPACITY`] lines
//!   or [`MAX_QUEUED_BYTES`] bytes wait already, the line is dropped and counted, and after
//!   each batch (at most [`BATCH_MAX`] lines, so also during a flood) the writer writes one
//!   notice saying how many were dropped (in the log's own format);
//! - lines are written whole and in the order they were logged (one channel, one writer),
//!   at most about [`BATCH_PAUSE`] after they were logged while the writer keeps up;
//! - [`Flush`] on drop waits until every line logged before it is written, for at most
//!   [`FLUSH_WAIT`], so the last lines before a normal exit are not lost and a stderr nobody
//!   reads cannot hold the exit up for ever; [`Flush::line`] puts a process's last words
//!   behind them the same way. Nothing else in the process writes to stderr directly but
//!   the panic hook, a one-shot command's own output and the fallback when the thread
//!   cannot start.
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines that may wait for the writer before new ones are dropped.
pub const CAPACITY: usize = 8192;
/// Bytes that may wait for the writer before new lines are dropped (lines from errors are
/// not cut, so a line count alone would not bound the memory).
pub const MAX_QUEUED_BYTES: usize = 4 << 20;
/// The most messages one batch writes before the notice of drops and the acknowledgements
/// of flushes: under a flood that outruns stderr, the notice still comes.
const BATCH_MAX: usize = 1024;
/// While lines keep coming, the writer writes what arrived every this often.
pub const BATCH_PAUSE: Duration = Duration::from_millis(10);
/// How long [`Flush`] waits for the writer at exit.
pub const FLUSH_WAIT: Duration = Duration::from_secs(2);

enum Msg {
    Line(Vec<u8>),
    /// Everything before this is written: say so on the sender.
    Flush(SyncSender<()>),
}

/// The `MakeWriter` of the log layer: each event's line goes to the writer thread (or,
/// when that thread could not be started, straight to stderr).
#[derive(Clone)]
pub struct Background {
    tx: Option<SyncSender<Msg>>,
    shared: Arc<Shared>,
}

/// What the loggers and the writer both count.
#[derive(Default)]
struct Shared {
    /// Lines dropped since the last notice.
    dropped: AtomicU64,
    /// Bytes handed over and not yet written.
    queued: AtomicUsize,
}

impl Shared {
    /// Take `n` bytes into the queue, unless that would pass [`MAX_QUEUED_BYTES`].
    fn reserve(&self, n: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= MAX_QUEUED_BYTES).then_some(q + n)
            })
            .is_ok()
    }
}

/// Waits, when dropped, until the lines logged before are written (see the invariants).
pub struct Flush {
    to: Background,
}

/// The notice written after lines were dropped, as a line of the log's format.
fn notice(n: u64, json: bool) -> String {
    // Microseconds, as the fmt layer writes its own timestamps.
    let now = format!("{:.6}", k8s_openapi::jiff::Timestamp::now());
    let msg = format!("{n} log lines were dropped: stderr was not read fast enough");
    if json {
        format!(
            "{{\"timestamp\":\"{now}\",\"level\":\"WARN\",\"fields\":{{\"message\":\"{msg}\",\"dropped\":{n}}},\"target\":\"kube_standby::telemetry\"}}\n"
        )
    } else {
        format!("{now}  WARN {msg} dropped={n}\n")
    }
}

/// The writer thread's loop. It blocks for the first line after a quiet spell, then writes
/// in batches every [`BATCH_PAUSE`] while lines keep coming, so a busy process does not
/// wake it once per line (each wake-up is a context switch on a contended core: measured,
/// it cost more latency than the `write` it takes off the request path). A batch ends when
/// the channel is empty or after [`BATCH_MAX`] messages; then the notice of lines dropped
/// meanwhile, one flush of the buffered output, and the acknowledgements. A batch cut short
/// is followed at once by the next (the writer is behind: no pause).
fn write_all_of(rx: Receiver<Msg>, out: impl Write, shared: &Shared, json: bool) {
    let mut out = std::io::BufWriter::with_capacity(64 << 10, out);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        loop {
            let mut acks = vec![];
            let mut taken = 0;
            while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
                taken += 1;
                match msg {
                    // A failed write (stderr closed) loses the line, as an unread stderr would.
                    Msg::Line(l) => {
                        let _ = out.write_all(&l);
                        shared.queued.fetch_sub(l.len(), Ordering::AcqRel);
                    }
                    Msg::Flush(ack) => acks.push(ack),
                }
                if taken == BATCH_MAX {
                    break;
                }
            }
            let n = shared.dropped.swap(0, Ordering::Relaxed);
            if n > 0 {
                let _ = out.write_all(notice(n, json).as_bytes());
            }
            let _ = out.flush();
            for ack in acks {
                let _ = ack.send(());
            }
            if taken == 0 {
                // Nothing came during the last pause: block until the next line.
                break;
            }
            if taken < BATCH_MAX {
                std::thread::sleep(BATCH_PAUSE);
            }
        }
    }
}

/// A writer thread writing to `out`, its `MakeWriter` and the [`Flush`] to hold until exit.
/// `json`: the notice of dropped lines is written as a JSON line. When the thread cannot
/// be started (said on stderr), lines go straight to stderr as before.
pub fn start(out: impl Write + Send + 'static, capacity: usize, json: bool) -> (Background, Flush) {
    let (tx, rx) = mpsc::sync_channel(capacity);
    let shared = Arc::new(Shared::default());
    let counter = shared.clone();
    let tx = match std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_all_of(rx, out, &counter, json))
    {
        Ok(_) => Some(tx),
        Err(e) => {
            eprintln!("could not start the log writer thread ({e}): logging straight to stderr");
            None
        }
    };
    let to = Background { tx, shared };
    (to.clone(), Flush { to })
}

impl Background {
    /// Hand `line` to the writer without blocking: false (and counted as dropped) when the
    /// queue holds [`CAPACITY`] lines or [`MAX_QUEUED_BYTES`] bytes already. Straight to
    /// stderr when there is no writer thread.
    fn send(&self, line: Vec<u8>) -> bool {
        let Some(tx) = &self.tx else {
            return std::io::stderr().write_all(&line).is_ok();
        };
        let shared = &self.shared;
        let len = line.len();
        let sent = shared.reserve(len) && {
            let sent = tx.try_send(Msg::Line(line)).is_ok();
            if !sent {
                shared.queued.fetch_sub(len, Ordering::AcqRel);
            }
            sent
        };
        if !sent {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }
}

impl Flush {
    /// Hand `line` (a whole line, newline included) to the writer, behind every line logged
    /// so far, never blocking: the last words of a process that exits with an error go
    /// this way, so a stalled stderr cannot hold the exit up. Straight to stderr when there
    /// is no writer thread. False when it was dropped (the queue was full).
    pub fn line(&self, line: &str) -> bool {
        self.to.send(line.as_bytes().to_vec())
    }

    /// Wait until every line logged before this call is written, for at most `wait`.
    /// False when the writer did not get there in time (or is gone).
    pub fn wait(&self, wait: Duration) -> bool {
        let Some(tx) = &self.to.tx else {
            // Lines went straight to stderr: nothing waits.
            return true;
        };
        let deadline = Instant::now() + wait;
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        let mut msg = Msg::Flush(ack_tx);
        loop {
            match tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(m)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        ack_rx.recv_timeout(left).is_ok()
    }
}

impl Drop for Flush {
    fn drop(&mut self) {
        self.wait(FLUSH_WAIT);
    }
}

/// One event's line, collected and handed over whole when the layer is done with it.
pub struct Line<'a> {
    to: &'a Background,
    buf: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        self.to.send(std::mem::take(&mut self.buf));
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Background {
    type Writer = Line<'a>;
    fn make_writer(&'a self) -> Line<'a> {
        Line {
            to: self,
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Barrier, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// A stderr stand-in: what was written, and optionally a gate that holds the first
    /// write until the test opens it (a reader that has stopped reading).
    #[derive(Clone, Default)]
    struct Sink {
        got: Arc<Mutex<Vec<u8>>>,
        gate: Option<Arc<Barrier>>,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if let Some(g) = self.gate.take() {
                g.wait();
            }
            self.got.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        /// A sink whose first write waits until the returned barrier is passed.
        fn gated() -> (Sink, Arc<Barrier>) {
            let gate = Arc::new(Barrier::new(2));
            let sink = Sink {
                got: Arc::default(),
                gate: Some(gate.clone()),
            };
            (sink, gate)
        }

        fn text(&self) -> String {
            String::from_utf8(self.got.lock().unwrap().clone()).unwrap()
        }
    }

    fn log(b: &Background, line: &str) {
        let mut w = b.make_writer();
        // The fmt layer writes a line in one or more pieces; it goes over whole.
        let (head, tail) = line.split_at(line.len() / 2);
        w.write_all(head.as_bytes()).unwrap();
        w.write_all(tail.as_bytes()).unwrap();
    }

    #[test]
    fn lines_arrive_whole_and_in_order_and_a_flush_waits_for_them() {
        let sink = Sink::default();
        // Room for every line: this test is about order, not drops.
        let (bg, flush) = start(sink.clone(), 1000, false);
        let want: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        // From several threads in turn, through clones, as the layer logs.
        for i in 0..1000 {
            let b = bg.clone();
            if i % 2 == 0 {
                std::thread::spawn(move || log(&b, &format!("line {i}\n")))
                    .join()
                    .unwrap();
            } else {
                log(&b, &format!("line {i}\n"));
            }
        }
        assert!(flush.wait(Duration::from_secs(10)));
        assert_eq!(sink.text(), want);
        assert_eq!(bg.shared.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_stalled_stderr_never_blocks_the_logger_and_the_drop_is_told() {
        let (sink, gate) = Sink::gated();
        let (bg, flush) = start(sink.clone(), 4, false);
        // The writer takes at most one batch (BATCH_MAX lines, into its buffer) and blocks
        // when it writes them out; 4 more wait in the channel; the rest are dropped, and
        // logging each returns at once.
        const N: u64 = 5000;
        let (done_tx, done_rx) = mpsc::channel();
        let logger = bg.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                log(&logger, &format!("line {i}\n"));
            }
            let _ = done_tx.send(());
        });
        let logged = done_rx.recv_timeout(Duration::from_secs(5));
        if logged.is_err() {
            gate.wait();
            panic!("logging waited for stderr");
        }
        // A flush cannot get through while stderr is stalled: it gives up in time.
        assert!(!flush.wait(Duration::from_millis(100)));
        gate.wait();
        assert!(flush.wait(Duration::from_secs(10)));
        let text = sink.text();
        assert!(text.starts_with("line 0\n"), "{text}");
        // Drops are told in notices (one after each batch that saw some); the last line is
        // one, with the time as the log's own lines carry it.
        let told: Vec<u64> = text
            .lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once("  WARN ")?;
                let (n, tail) = rest.split_once(" log lines were dropped: ")?;
                let n: u64 = n.parse().ok()?;
                (tail == format!("stderr was not read fast enough dropped={n}")).then_some(n)
            })
            .collect();
        let last = text.lines().last().unwrap_or_default();
        assert!(last.contains(" log lines were dropped: "), "{text}");
        let stamp = last.split_whitespace().next().unwrap_or_default();
        assert!(
            stamp.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
            "{last}"
        );
        assert_eq!(bg.shared.dropped.load(Ordering::Relaxed), 0);
        let dropped: u64 = told.iter().sum();
        assert!(
            dropped >= N - (BATCH_MAX as u64 + 4),
            "only {dropped} dropped"
        );
        // Every line that was kept is whole and in order, and every other one was told.
        let kept: Vec<usize> = text
            .lines()
            .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
            .collect();
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
        assert_eq!(kept.len() as u64 + dropped, N);
    }

    /// A stderr that takes 200 µs for every write call and keeps only whether a drop notice
    /// went by.
    struct Slow {
        told: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(Duration::from_micros(200));
            let notice = b"log lines were dropped";
            if b.windows(notice.len()).any(|w| w == notice) {
                self.told.store(true, Ordering::Relaxed);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn under_a_flood_that_outruns_stderr_the_drop_notice_still_comes() {
        let told: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (bg, _flush) = start(Slow { told: told.clone() }, 16, false);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (b, halt) = (bg.clone(), stop.clone());
        // Lines larger than the writer's buffer, so each costs the slow stderr one write;
        // the logger refills the channel far faster: it is never empty.
        let fat = "x".repeat(80 << 10);
        let logger = std::thread::spawn(move || {
            let mut i = 0u64;
            while !halt.load(Ordering::Relaxed) {
                log(&b, &format!("flood line {i} {fat}\n"));
                i += 1;
            }
        });
        // While the flood goes on, the notice must show up (after one batch: about 0.3 s
        // here; up to 20 s allowed for a loaded machine).
        let seen = (0..2000).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            told.load(Ordering::Relaxed)
        });
        stop.store(true, Ordering::Relaxed);
        logger.join().unwrap();
        assert!(seen, "no drop notice within 20 s of a flood");
    }

    #[test]
    fn queued_bytes_are_bounded_as_well_as_lines() {
        let (sink, gate) = Sink::gated();
        let (bg, flush) = start(sink.clone(), CAPACITY, false);
        // Lines of 1 MiB: the line count (8,192) would take them all; the byte bound lets
        // at most MAX_QUEUED_BYTES of them wait (the one being written counts too).
        let big = format!("{}\n", "y".repeat((1 << 20) - 1));
        for _ in 0..20 {
            log(&bg, &big);
        }
        let dropped = bg.shared.dropped.load(Ordering::Relaxed);
        let fit = (MAX_QUEUED_BYTES / big.len()) as u64;
        assert_eq!(dropped, 20 - fit, "{dropped} dropped");
        gate.wait();
        assert!(flush.wait(Duration::from_secs(10)));
        assert_eq!(bg.shared.queued.load(Ordering::Relaxed), 0);
        let text = sink.text();
        assert_eq!(text.matches(&big).count() as u64, fit);
    }

    #[test]
    fn a_last_line_goes_after_every_line_logged_before_it() {
        let sink = Sink::default();
        let (bg, flush) = start(sink.clone(), 16, false);
        log(&bg, "one\n");
        log(&bg, "two\n");
        assert!(flush.line("error: the end\n"));
        drop(flush);
        assert_eq!(sink.text(), "one\ntwo\nerror: the end\n");
        assert_eq!(bg.shared.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_drop_notice_is_a_line_of_the_logs_format() {
        let j: serde_json::Value = serde_json::from_str(notice(7, true).trim_end()).unwrap();
        assert_eq!(j["level"], "WARN");
        assert!(j["timestamp"]
            .as_str()
            .is_some_and(|t| t.parse::<k8s_openapi::jiff::Timestamp>().is_ok()));
        assert_eq!(j["fields"]["dropped"], 7);
        assert!(notice(7, true).ends_with("}\n"));
        assert_eq!(notice(7, false).lines().count(), 1);
    }

    #[test]
    fn the_flush_on_drop_returns_when_the_writer_is_stalled() {
        let (sink, gate) = Sink::gated();
        let (bg, flush) = start(sink, 4, false);
        log(&bg, "stuck\n");
        let t = Instant::now();
        drop(flush);
        let waited = t.elapsed();
        assert!(waited >= FLUSH_WAIT, "returned after {waited:?}");
        assert!(waited < FLUSH_WAIT * 3, "returned after {waited:?}");
        gate.wait();
    }
}
