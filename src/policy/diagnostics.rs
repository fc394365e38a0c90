//! Problems found while loading a policy directory, each located in a file, and
//! their rendering as compiler-style diagnostics with the offending source line.

use std::fmt;

/// How serious a problem is: errors reject the directory, warnings are reported only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The directory cannot be used.
    Error,
    /// Worth fixing; the directory is still used.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem in a policy directory, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// File path relative to the policy directory (`/`-separated), when the problem is in a file.
    pub file: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters), when known.
    pub column: Option<usize>,
    /// Length of the marked span in characters (at least 1), when known.
    pub span_len: Option<usize>,
    /// The text of the line the problem is on, when known.
    pub source_line: Option<String>,
    /// Cedar's (or our) message.
    pub message: String,
    /// Extra advice, usually Cedar's own help text.
    pub help: Option<String>,
    /// The stable id of the policy the problem is in (`@id`, else `file.cedar:N`), when
    /// it is in one that parsed.
    pub policy_id: Option<String>,
}

impl Problem {
    /// `file:line: message` (or the message alone), on one line.
    pub fn one_line(&self) -> String {
        match self.location() {
            Some(loc) => format!("{loc}: {}", self.message),
            None => self.message.clone(),
        }
    }

    /// A problem that is not tied to a place in a file.
    pub fn error(file: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            file: file.map(str::to_owned),
            line: None,
            column: None,
            span_len: None,
            source_line: None,
            message: message.into(),
            help: None,
            policy_id: None,
        }
    }

    /// Set the location from a byte offset into `src`.
    pub fn at_offset(mut self, src: &str, offset: usize, len: usize) -> Self {
        let offset = offset.min(src.len());
        let offset = floor_char_boundary(src, offset);
        let line_start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
        let line_no = src[..offset].matches('\n').count() + 1;
        let column = src[line_start..offset].chars().count() + 1;
        let end = floor_char_boundary(src, (offset + len).min(line_end).max(offset));
        let span_chars = src[offset..end].chars().count().max(1);
        let text = src[line_start..line_end].trim_end_matches('\r');
        self.line = Some(line_no);
        self.column = Some(column);
        self.span_len = Some(span_chars);
        self.source_line = Some(truncate(text, 300));
        self
    }

    /// Set the location from a 1-based line and column into `src`.
    pub fn at_line_col(self, src: &str, line: usize, column: usize) -> Self {
        let mut offset = 0;
        for (i, l) in src.split_inclusive('\n').enumerate() {
            if i + 1 == line {
                let col_bytes: usize = l
                    .chars()
                    .take(column.saturating_sub(1))
                    .map(char::len_utf8)
                    .sum();
                return self.at_offset(src, offset + col_bytes, 1);
            }
            offset += l.len();
        }
        self.at_offset(src, src.len(), 1)
    }

    /// Add help text.
    pub fn with_help(mut self, help: Option<String>) -> Self {
        self.help = help.filter(|h| !h.trim().is_empty());
        self
    }

    /// The machine-readable form (`validate --json`): `file`, `line`, `column`,
    /// `policy_id`, `severity` (`error` or `warning`), `message`, `help`; `null` where
    /// unknown.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "policy_id": self.policy_id,
            "severity": self.severity.as_str(),
            "message": self.message,
            "help": self.help,
        })
    }

    /// `file:line:column`, or as much of it as is known.
    pub fn location(&self) -> Option<String> {
        let file = self.file.as_deref()?;
        Some(match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
            (Some(l), None) => format!("{file}:{l}"),
            _ => file.to_owned(),
        })
    }

    /// Problems from a Cedar diagnostic (and its related diagnostics), located in `src`.
    pub fn from_diagnostic(
        diag: &dyn miette::Diagnostic,
        file: Option<&str>,
        src: Option<&str>,
        severity: Severity,
    ) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut p =
            Problem::error(file, diag.to_string()).with_help(diag.help().map(|h| h.to_string()));
        p.severity = severity;
        if let (Some(src), Some(label)) = (src, diag.labels().and_then(|mut l| l.next())) {
            p = p.at_offset(src, label.offset(), label.len());
        }
        out.push(p);
        if let Some(related) = diag.related() {
            for r in related {
                out.extend(Problem::from_diagnostic(r, file, src, severity));
            }
        }
        out
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.severity.as_str(), self.message)?;
        if let Some(loc) = self.location() {
            writeln!(f, "  --> {loc}")?;
        }
        if let (Some(line), Some(text)) = (self.line, &self.source_line) {
            let gutter = line.to_string();
            let pad = " ".repeat(gutter.len());
            writeln!(f, "{pad} |")?;
            writeln!(f, "{gutter} | {text}")?;
            if let Some(col) = self.column {
                let marks = "^".repeat(self.span_len.unwrap_or(1));
                writeln!(f, "{pad} | {}{marks}", " ".repeat(col - 1))?;
            }
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

/// All problems of one load attempt.
#[derive(Debug, Clone, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// The errors among them.
    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter().filter(|p| p.severity == Severity::Error)
    }

    /// The warnings among them.
    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter().filter(|p| p.severity == Severity::Warning)
    }

    /// Whether any of them is an error.
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// One line per problem (`file:line:col: message`), for logs.
    pub fn one_line_each(&self) -> Vec<String> {
        self.0.iter().map(Problem::one_line).collect()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

/// An error's message followed by those of its sources that add something.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max_chars).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_to_line_and_column() {
        let src = "line one\n  second line\nthird";
        let p = Problem::error(Some("a.cedar"), "bad").at_offset(src, 11, 6);
        assert_eq!(p.line, Some(2));
        assert_eq!(p.column, Some(3));
        assert_eq!(p.source_line.as_deref(), Some("  second line"));
        assert_eq!(p.location().as_deref(), Some("a.cedar:2:3"));
        let text = p.to_string();
        assert!(text.contains("2 |   second line"), "{text}");
        assert!(text.contains("  ^^^^^^"), "{text}");
    }

    #[test]
    fn json_form_has_every_field() {
        let mut p = Problem::error(Some("a.cedar"), "bad")
            .at_offset("x\ny", 2, 1)
            .with_help(Some("fix it".into()));
        p.policy_id = Some("a.cedar:0".into());
        assert_eq!(
            p.to_json(),
            serde_json::json!({"file": "a.cedar", "line": 2, "column": 1, "policy_id": "a.cedar:0",
                "severity": "error", "message": "bad", "help": "fix it"})
        );
        let p = Problem::error(None, "no schema");
        assert_eq!(p.to_json()["file"], serde_json::Value::Null);
        assert_eq!(p.to_json()["policy_id"], serde_json::Value::Null);
    }

    #[test]
    fn offsets_past_the_end_and_inside_characters_do_not_panic() {
        let src = "é\nü";
        let p = Problem::error(None, "x").at_offset(src, 1, 100);
        assert_eq!(p.line, Some(1));
        let p = Problem::error(None, "x").at_offset(src, 1000, 1);
        assert_eq!(p.line, Some(2));
        let p = Problem::error(None, "x").at_line_col(src, 2, 1);
        assert_eq!(p.source_line.as_deref(), Some("ü"));
    }
}
