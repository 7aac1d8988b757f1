//! Where `migrate` and `rebalance` write their lines: printed as they come,
//! so that an operator sees a long move's steps, and its progress, when
//! they happen (they all came at the end, after minutes of silence). What
//! was printed before an error stays on the screen, above it.

use std::fmt;

pub struct Output {
    /// Lines kept instead of printed (the unit tests' view).
    #[cfg(test)]
    kept: String,
    /// Put before each line: `rebalance` indents its moves' lines.
    pub indent: &'static str,
    at_line_start: bool,
}

impl Output {
    /// Lines printed on stdout as they are written.
    pub fn stdout() -> Output {
        Output {
            #[cfg(test)]
            kept: String::new(),
            indent: "",
            at_line_start: true,
        }
    }

    fn emit(&mut self, text: &str) {
        #[cfg(test)]
        self.kept.push_str(text);
        #[cfg(not(test))]
        {
            use std::io::Write as _;
            // A closed stdout (the operator's pipe gone) must not stop a
            // move: the lines are only for reading.
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
        }
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
        self.emit(&indented);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    #[test]
    fn lines_are_indented_however_they_are_written() {
        let mut out = Output::stdout();
        let _ = writeln!(out, "move 1 of 2");
        out.indent = "  ";
        let _ = write!(out, "migration m1: ");
        let _ = writeln!(out, "slots 0-9\nmoved 3 keys");
        out.indent = "";
        let _ = writeln!(out, "balanced");
        assert_eq!(
            out.kept,
            "move 1 of 2\n  migration m1: slots 0-9\n  moved 3 keys\nbalanced\n"
        );
    }
}
