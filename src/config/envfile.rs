//! Parsing of `.env`-style files (`KEY=VALUE` lines) into ordered entries with line numbers.
//!
//! This module only reads text; it knows nothing about which keys exist or what they mean.
//! Validation lives in the modules that own the keys, so an error can name the key and line.

use std::fmt;

/// One `KEY=VALUE` assignment and the line it came from (1-based).
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub line: usize,
}

impl fmt::Debug for Entry {
    // Values may be secrets; never print them through Debug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Entry({} at line {})", self.key, self.line)
    }
}

/// A syntax error in an env file, with the 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

/// Parses env-file text. Accepts blank lines, `# comments`, an optional `export ` prefix,
/// and values that are bare, 'single-quoted' (literal) or "double-quoted" (with `\n`, `\"`
/// and `\\` escapes). A bare value ends at ` #` so trailing comments work as in compose.
///
/// A byte-order mark, or a key set twice, is an error naming the line: with a BOM the
/// first key would silently be another key, and with two values it is unclear which
/// one the user meant (issue 14).
pub fn parse(text: &str) -> Result<Vec<Entry>, SyntaxError> {
    if text.starts_with('\u{feff}') {
        return Err(SyntaxError {
            line: 1,
            message: "the file starts with a byte-order mark (U+FEFF); save it as UTF-8 without BOM (e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`)".into(),
        });
    }
    let mut entries: Vec<Entry> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let body = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let Some((key, rest)) = body.split_once('=') else {
            return Err(SyntaxError {
                line,
                message: format!("expected KEY=VALUE, found {:?}", truncate(trimmed)),
            });
        };
        let key = key.trim();
        if !is_valid_key(key) {
            return Err(SyntaxError {
                line,
                message: format!(
                    "{:?} is not a valid key; use upper-case letters, digits and '_'",
                    truncate(key)
                ),
            });
        }
        let value = parse_value(rest.trim()).map_err(|message| SyntaxError { line, message })?;
        if let Some(first) = entries.iter().find(|e| e.key == key) {
            return Err(SyntaxError {
                line,
                message: format!(
                    "{key} is set again (first on line {}); keep one of the two lines",
                    first.line
                ),
            });
        }
        entries.push(Entry {
            key: key.to_string(),
            value,
            line,
        });
    }
    Ok(entries)
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(rest: &str) -> Result<String, String> {
    if let Some(inner) = rest.strip_prefix('\'') {
        let end = inner
            .find('\'')
            .ok_or_else(|| "unterminated single quote".to_string())?;
        check_trailing(&inner[end + 1..])?;
        return Ok(inner[..end].to_string());
    }
    if let Some(inner) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    check_trailing(&inner[i + 1..])?;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, other)) => out.push(other),
                    None => break,
                },
                other => out.push(other),
            }
        }
        return Err("unterminated double quote".to_string());
    }
    let value = match rest.find(" #") {
        Some(comment) => &rest[..comment],
        None => rest,
    };
    Ok(value.trim_end().to_string())
}

fn check_trailing(after_quote: &str) -> Result<(), String> {
    let after = after_quote.trim();
    if after.is_empty() || after.starts_with('#') {
        Ok(())
    } else {
        Err(format!(
            "unexpected text after closing quote: {:?}",
            truncate(after)
        ))
    }
}

/// Quotes a value for writing back to an env file, so that `parse` returns it unchanged.
pub fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/@+=*%".contains(c));
    if plain {
        value.to_string()
    } else {
        let escaped = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_quotes_and_export() {
        let text =
            "# header\n\nA=1\nexport B = two words # note\nC='lit # x'\nD=\"q\\\"n\\n\"\nE=\n";
        let got: Vec<(String, String, usize)> = parse(text)
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value, e.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("A".into(), "1".into(), 3),
                ("B".into(), "two words".into(), 4),
                ("C".into(), "lit # x".into(), 5),
                ("D".into(), "q\"n\n".into(), 6),
                ("E".into(), "".into(), 7),
            ]
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        assert_eq!(parse("A=1\nnot a pair\n").unwrap_err().line, 2);
        assert_eq!(parse("A=1\n\nB=\"open\n").unwrap_err().line, 3);
        assert_eq!(parse("1A=x\n").unwrap_err().line, 1);
        assert!(parse("A='x' y\n").is_err());
    }

    // Regression (issue 14): a BOM and a repeated key were read without a word.
    #[test]
    fn a_bom_or_a_repeated_key_is_an_error_naming_the_line() {
        let bom = parse("\u{feff}DOMAIN=x\n").unwrap_err();
        assert_eq!(bom.line, 1);
        assert!(bom.message.contains("byte-order mark"), "{}", bom.message);
        let twice = parse("A=1\n# c\nB=2\nA=3\n").unwrap_err();
        assert_eq!(twice.line, 4);
        assert_eq!(
            twice.to_string(),
            "line 4: A is set again (first on line 1); keep one of the two lines"
        );
    }

    #[test]
    fn quote_round_trips() {
        for value in [
            "plain",
            "",
            "two words",
            "0 2 * * *",
            "a\"b\\c\nd",
            "https://x.com,https://y",
        ] {
            let text = format!("K={}\n", quote(value));
            assert_eq!(parse(&text).unwrap()[0].value, value, "{text}");
        }
    }
}
