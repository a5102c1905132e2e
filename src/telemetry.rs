//! Logging setup: text or JSON, filtered by RUST_LOG (default info), on stderr.
//!
//! Invariants: one event is one line in either format: strings from clients are logged
//! through [`Untrusted`], which escapes every control character and cuts long values;
//! colours are used only when stderr is a terminal (and `NO_COLOR` is unset); lines are
//! written by a thread of their own ([`background`]), so logging never waits on stderr.
pub mod background;
use std::fmt;
use std::io::IsTerminal;

use tracing_subscriber::{fmt as tfmt, prelude::*, EnvFilter};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Colours only for a person at a terminal.
fn use_ansi() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Install the log subscriber. Hold what it returns until the process ends: dropping it
/// waits (a bounded time) until the lines logged so far are written. None when logging was
/// set up already.
#[must_use = "dropped at once, it waits for the log writer now instead of at exit"]
pub fn init(format: LogFormat) -> Option<background::Flush> {
    let json = format == LogFormat::Json;
    let (writer, flush) = background::start(std::io::stderr(), background::CAPACITY, json);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let res = match format {
        LogFormat::Json => registry
            .with(
                tfmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tfmt::layer()
                    .with_target(false)
                    .with_ansi(use_ansi())
                    .with_writer(writer),
            )
            .try_init(),
    };
    match res {
        Ok(()) => Some(flush),
        Err(e) => {
            eprintln!("logging already initialised: {e}");
            None
        }
    }
}

/// A string from outside (a request's uid, name, an error echoing a body) made safe to
/// log: control characters (newline, ESC, ...) and line separators are written as
/// `\u{..}` escapes, and only the first `max` characters are kept, followed by how many
/// bytes were cut.
#[derive(Clone, Copy, Debug)]
pub struct Untrusted<'a> {
    value: &'a str,
    max: usize,
}

impl<'a> Untrusted<'a> {
    /// For identifiers and names (at most 128 characters).
    pub fn short(value: &'a str) -> Self {
        Untrusted { value, max: 128 }
    }
    /// For messages (at most 512 characters).
    pub fn long(value: &'a str) -> Self {
        Untrusted { value, max: 512 }
    }
}

/// The first `max` characters of `s`, with `…` when it was longer (for messages kept in
/// caches and errors, not for logs: see [`Untrusted`]).
pub fn cut(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

impl fmt::Display for Untrusted<'_> {
    /// Runs of characters that need no escape are written whole (one call per run, not
    /// per character: this is on every admission log line).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut run = 0;
        for (kept, (i, c)) in self.value.char_indices().enumerate() {
            if kept == self.max {
                f.write_str(self.value.get(run..i).unwrap_or_default())?;
                return write!(f, "…(+{} bytes)", self.value.len() - i);
            }
            if needs_escape(c) {
                f.write_str(self.value.get(run..i).unwrap_or_default())?;
                write!(f, "\\u{{{:x}}}", c as u32)?;
                run = i + c.len_utf8();
            }
        }
        f.write_str(self.value.get(run..).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn escapes_and_cuts() {
        assert_eq!(Untrusted::short("plain-uid").to_string(), "plain-uid");
        assert_eq!(
            Untrusted::short("a\nb\r\x1b[31mc\u{2028}").to_string(),
            "a\\u{a}b\\u{d}\\u{1b}[31mc\\u{2028}"
        );
        let long = "x".repeat(1_000_000);
        let shown = Untrusted::short(&long).to_string();
        assert_eq!(shown, format!("{}…(+999872 bytes)", "x".repeat(128)));
        // Cut on a character boundary.
        let wide = "é".repeat(200);
        assert!(Untrusted::short(&wide)
            .to_string()
            .ends_with("…(+144 bytes)"));
    }

    /// The display as it was written first, one character at a time: the reference.
    fn char_by_char(value: &str, max: usize) -> String {
        let mut out = String::new();
        for (kept, (i, c)) in value.char_indices().enumerate() {
            if kept == max {
                out.push_str(&format!("…(+{} bytes)", value.len() - i));
                return out;
            }
            if needs_escape(c) {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            } else {
                out.push(c);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn written_in_runs_as_it_was_char_by_char(
            s in "[a-z\\n\\x1b\\u{2028}é-]{0,300}", t in any::<String>()
        ) {
            for v in [&s, &t] {
                prop_assert_eq!(Untrusted::short(v).to_string(), char_by_char(v, 128));
                prop_assert_eq!(Untrusted::long(v).to_string(), char_by_char(v, 512));
            }
        }

        #[test]
        fn never_a_line_break_and_bounded(s in any::<String>()) {
            let shown = Untrusted::short(&s).to_string();
            prop_assert!(!shown.chars().any(needs_escape), "{shown:?}");
            // 128 characters, each at most 10 bytes escaped, plus the cut note.
            prop_assert!(shown.len() <= 128 * 10 + 32);
            if s.chars().count() <= 128 && !s.chars().any(needs_escape) {
                prop_assert_eq!(shown, s);
            }
        }
    }
}
