//! Log lines written to stderr by a thread of their own, so that no request, reconcile or
//! probe waits on stderr. In a cluster stderr is a pipe the container runtime reads; when
//! that reader falls behind (a slow node disk, a stalled shim) a plain `write` blocks, and
//! with it the tokio worker that logged: every admission review on that worker stalls
//! until the API server's webhook timeout fails it.
//!
//! Invariants:
//! - logging never blocks: a line is handed over with `try_send`; when [`CAPACITY`] lines
//!   wait already, the line is dropped and counted, and once the writer catches up it
//!   writes one notice saying how many were dropped (in the log's own format);
//! - lines are written whole and in the order they were logged (one channel, one writer),
//!   at most about [`BATCH_PAUSE`] after they were logged while the writer keeps up;
//! - [`Flush`] on drop waits until every line logged before it is written, for at most
//!   [`FLUSH_WAIT`], so the last lines before a normal exit are not lost and a stderr nobody
//!   reads cannot hold the exit up for ever.
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines that may wait for the writer before new ones are dropped.
pub const CAPACITY: usize = 8192;
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
    dropped: Arc<AtomicU64>,
}

/// Waits, when dropped, until the lines logged before are written (see the invariants).
pub struct Flush {
    tx: Option<SyncSender<Msg>>,
}

/// The notice written after lines were dropped, as a line of the log's format.
fn notice(n: u64, json: bool) -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
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
/// it cost more latency than the `write` it takes off the request path). After each batch,
/// the notice of lines dropped meanwhile; then the flush and the acknowledgements.
fn write_all_of(rx: Receiver<Msg>, mut out: impl Write, dropped: &AtomicU64, json: bool) {
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        loop {
            let mut acks = vec![];
            let mut wrote = false;
            while let Some(msg) = next.take().or_else(|| rx.try_recv().ok()) {
                wrote = true;
                match msg {
                    // A failed write (stderr closed) loses the line, as an unread stderr would.
                    Msg::Line(l) => {
                        let _ = out.write_all(&l);
                    }
                    Msg::Flush(ack) => acks.push(ack),
                }
            }
            let n = dropped.swap(0, Ordering::Relaxed);
            if n > 0 {
                let _ = out.write_all(notice(n, json).as_bytes());
            }
            let _ = out.flush();
            for ack in acks {
                let _ = ack.send(());
            }
            if !wrote {
                // Nothing came during the last pause: block until the next line.
                break;
            }
            std::thread::sleep(BATCH_PAUSE);
        }
    }
}

/// A writer thread writing to `out`, its `MakeWriter` and the [`Flush`] to hold until exit.
/// `json`: the notice of dropped lines is written as a JSON line. When the thread cannot
/// be started (said on stderr), lines go straight to stderr as before.
pub fn start(out: impl Write + Send + 'static, capacity: usize, json: bool) -> (Background, Flush) {
    let (tx, rx) = mpsc::sync_channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    let counter = dropped.clone();
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
    (
        Background {
            tx: tx.clone(),
            dropped,
        },
        Flush { tx },
    )
}

impl Flush {
    /// Wait until every line logged before this call is written, for at most `wait`.
    /// False when the writer did not get there in time (or is gone).
    pub fn wait(&self, wait: Duration) -> bool {
        let Some(tx) = &self.tx else {
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
        let line = std::mem::take(&mut self.buf);
        match &self.to.tx {
            Some(tx) => {
                if tx.try_send(Msg::Line(line)).is_err() {
                    self.to.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                let _ = std::io::stderr().write_all(&line);
            }
        }
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
        assert_eq!(bg.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_stalled_stderr_never_blocks_the_logger_and_the_drop_is_told() {
        let gate = Arc::new(Barrier::new(2));
        let sink = Sink {
            got: Arc::default(),
            gate: Some(gate.clone()),
        };
        let (bg, flush) = start(sink.clone(), 4, false);
        // The writer takes the first line and blocks in `write`; 4 or 5 lines wait in the
        // channel (as the writer took line 0 before or after the next came); the rest are
        // dropped, and logging each returns at once.
        let (done_tx, done_rx) = mpsc::channel();
        let logger = bg.clone();
        std::thread::spawn(move || {
            for i in 0..100 {
                log(&logger, &format!("line {i}\n"));
            }
            let _ = done_tx.send(());
        });
        let logged = done_rx.recv_timeout(Duration::from_secs(5));
        if logged.is_err() {
            gate.wait();
            panic!("logging waited for stderr");
        }
        let dropped = bg.dropped.load(Ordering::Relaxed);
        assert!(dropped >= 90, "only {dropped} dropped");
        // A flush cannot get through while stderr is stalled: it gives up in time.
        assert!(!flush.wait(Duration::from_millis(100)));
        gate.wait();
        assert!(flush.wait(Duration::from_secs(10)));
        let text = sink.text();
        assert!(text.starts_with("line 0\n"), "{text}");
        let last = text.lines().last().unwrap_or_default();
        assert!(
            last.ends_with(&format!(
                "  WARN {dropped} log lines were dropped: stderr was not read fast enough dropped={dropped}"
            )),
            "{text}"
        );
        assert!(last.parse::<k8s_openapi::jiff::Timestamp>().is_err());
        let stamp = last.split_whitespace().next().unwrap_or_default();
        assert!(
            stamp.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
            "{last}"
        );
        assert_eq!(bg.dropped.load(Ordering::Relaxed), 0);
        // Every line that was kept is whole and in order.
        let kept: Vec<usize> = text
            .lines()
            .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
            .collect();
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
        assert_eq!(kept.len() as u64 + dropped, 100);
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
        let gate = Arc::new(Barrier::new(2));
        let sink = Sink {
            got: Arc::default(),
            gate: Some(gate.clone()),
        };
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
