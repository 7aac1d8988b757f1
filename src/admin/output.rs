//! Where `migrate` and `rebalance` write their lines. The binary prints
//! each line as it comes, so that an operator sees a long move's steps,
//! and its progress, when they happen (they all came at the end, after
//! minutes of silence); otherwise the lines are kept for the caller.

use std::fmt;
use std::io::Write as _;

pub struct Output {
    kept: String,
    live: bool,
    /// Put before each line: `rebalance` indents its moves' lines.
    pub indent: &'static str,
    at_line_start: bool,
}

impl Output {
    /// Lines kept, for [`Output::text`].
    pub fn kept() -> Output {
        Output {
            kept: String::new(),
            live: false,
            indent: "",
            at_line_start: true,
        }
    }

    /// Lines printed on stdout as they are written.
    pub fn live() -> Output {
        Output {
            live: true,
            ..Output::kept()
        }
    }

    /// What was kept: every line, or none when they were printed. An
    /// error carries this, so that what was done before it is not lost.
    pub fn text(&self) -> &str {
        &self.kept
    }

    pub fn into_text(self) -> String {
        self.kept
    }
}

impl fmt::Write for Output {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut indented = String::with_capacity(s.len() + self.indent.len());
        for piece in s.split_inclusive('\n') {
            if self.at_line_start {
                indented.push_str(self.indent);
            }
            indented.push_str(piece);
            self.at_line_start = piece.ends_with('\n');
        }
        if self.live {
            // A closed stdout (the operator's pipe gone) must not stop a
            // move: the lines are only for reading.
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(indented.as_bytes());
            let _ = stdout.flush();
        } else {
            self.kept.push_str(&indented);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn lines_are_indented_however_they_are_written() {
        let mut out = Output::kept();
        let _ = writeln!(out, "move 1 of 2");
        out.indent = "  ";
        let _ = write!(out, "migration m1: ");
        let _ = writeln!(out, "slots 0-9\nmoved 3 keys");
        out.indent = "";
        let _ = writeln!(out, "balanced");
        assert_eq!(
            out.text(),
            "move 1 of 2\n  migration m1: slots 0-9\n  moved 3 keys\nbalanced\n"
        );
    }

    #[test]
    fn live_lines_are_not_kept() {
        let mut out = Output::live();
        let _ = writeln!(out, "printed");
        assert_eq!(out.text(), "");
    }
}
