//! The env-file format: `KEY=VALUE` lines as written by hand or by tools
//! such as Docker's `--env-file` and dotenv.
//!
//! Blank lines and `#` comments are skipped, an `export ` prefix is allowed
//! so the same file can be sourced by a shell, and values may be quoted:
//! single quotes are literal, double quotes understand `\n`, `\t`, `\\`,
//! `\"` and `\$`. An unquoted value ends at ` #` (a trailing comment).

/// One malformed line: its 1-based number and what was wrong.
pub type LineError = (usize, String);

/// Parses an env file; on failure returns every malformed line.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, Vec<LineError>> {
    let mut vars = Vec::new();
    let mut errors = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(var) => vars.push(var),
            Err(message) => errors.push((index + 1, message)),
        }
    }
    if errors.is_empty() { Ok(vars) } else { Err(errors) }
}

fn parse_line(line: &str) -> Result<(String, String), String> {
    let line = line.strip_prefix("export ").map_or(line, str::trim_start);
    let Some((key, value)) = line.split_once('=') else {
        return Err(format!("expected KEY=VALUE, found {line:?}"));
    };
    let key = key.trim_end();
    let mut chars = key.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("invalid variable name {key:?}; use letters, digits and `_`"));
    }
    Ok((key.to_string(), parse_value(value.trim())?))
}

fn parse_value(value: &str) -> Result<String, String> {
    let (text, rest) = if let Some(quoted) = value.strip_prefix('\'') {
        let end = quoted.find('\'').ok_or("unterminated single quote")?;
        (quoted[..end].to_string(), &quoted[end + 1..])
    } else if let Some(quoted) = value.strip_prefix('"') {
        double_quoted(quoted)?
    } else {
        // A `#` only starts a comment after whitespace: `a#b` is a value.
        let end = value.find(" #").or_else(|| value.find("\t#")).unwrap_or(value.len());
        return Ok(value[..end].trim_end().to_string());
    };
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(text)
    } else {
        Err(format!("unexpected text after the closing quote: {rest:?}"))
    }
}

/// The content of a double-quoted value and what follows its closing quote.
fn double_quoted(quoted: &str) -> Result<(String, &str), String> {
    let mut text = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((text, &quoted[i + 1..])),
            '\\' => match chars.next().map(|(_, c)| c) {
                Some('n') => text.push('\n'),
                Some('t') => text.push('\t'),
                Some('r') => text.push('\r'),
                Some(c @ ('\\' | '"' | '$')) => text.push(c),
                Some(c) => {
                    text.push('\\');
                    text.push(c);
                }
                None => break,
            },
            c => text.push(c),
        }
    }
    Err("unterminated double quote".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_common_forms() {
        let text = "# comment\n\nA=1\nexport B = two words \nC='lit $X \\n'\nD=\"x\\ny \\\"q\\\"\" # c\nE=\nF=a#b\nG=v # note\n  H=\"\"\n";
        let vars = parse_env_file(text).unwrap();
        let expected = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "lit $X \\n"),
            ("D", "x\ny \"q\""),
            ("E", ""),
            ("F", "a#b"),
            ("G", "v"),
            ("H", ""),
        ];
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(vars, expected);
    }

    #[test]
    fn reports_every_bad_line_with_its_number() {
        let text = "OK=1\nno equals\n1A=x\nQ=\"open\nS='open\nT=\"a\" b\n";
        let errors = parse_env_file(text).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        assert!(errors[0].1.contains("expected KEY=VALUE"));
        assert!(errors[1].1.contains("invalid variable name"));
        assert!(errors[2].1.contains("unterminated double quote"));
    }
}
