//! `sha256sum` format: `<64 hex>  <path>`, with GNU's escaping for names holding `\` or a newline
//! (the line then starts with `\`), so that `sha256sum -c checksums.sha256` accepts our lists.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumLine {
    pub sha256: [u8; 32],
    /// Relative to the folder holding the list, `/`-separated.
    pub path: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line} of the checksum list is malformed")]
pub struct ChecksumError {
    pub line: usize,
}

pub fn format_checksums(lines: &[ChecksumLine]) -> String {
    let mut out = String::new();
    for l in lines {
        let escape = l.path.contains('\\') || l.path.contains('\n');
        if escape {
            out.push('\\');
        }
        out.push_str(&hex::encode(l.sha256));
        out.push_str("  ");
        if escape {
            out.push_str(&l.path.replace('\\', "\\\\").replace('\n', "\\n"));
        } else {
            out.push_str(&l.path);
        }
        out.push('\n');
    }
    out
}

pub fn parse_checksums(text: &str) -> Result<Vec<ChecksumLine>, ChecksumError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.is_empty() {
            continue;
        }
        let bad = || ChecksumError { line: i + 1 };
        let (escaped, line) = match raw.strip_prefix('\\') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        if line.len() < 66 || !line.is_char_boundary(64) {
            return Err(bad());
        }
        let sha256: [u8; 32] = hex::decode(&line[..64])
            .map_err(|_| bad())?
            .try_into()
            .map_err(|_| bad())?;
        let rest = &line[64..];
        let path = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(bad)?;
        let path = if escaped {
            unescape(path).ok_or_else(bad)?
        } else {
            path.to_owned()
        };
        if path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c == "..") {
            return Err(bad()); // a list must not point outside its folder
        }
        out.push(ChecksumLine { sha256, path });
    }
    Ok(out)
}

/// The lines for files under `folder/`, with paths made relative to it: a backup's list checks
/// the restored store, which holds only the `crypto-store-sled/` part.
pub fn lines_under(lines: &[ChecksumLine], folder: &str) -> Vec<ChecksumLine> {
    let prefix = format!("{}/", folder.trim_end_matches('/'));
    lines
        .iter()
        .filter_map(|l| {
            l.path.strip_prefix(&prefix).map(|p| ChecksumLine {
                sha256: l.sha256,
                path: p.to_owned(),
            })
        })
        .collect()
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_including_escaped_names() {
        let lines = vec![
            ChecksumLine {
                sha256: [1; 32],
                path: "crypto-store-sled/matrix-sdk-crypto/db".into(),
            },
            ChecksumLine {
                sha256: [2; 32],
                path: "odd\\name\nwith newline".into(),
            },
        ];
        let text = format_checksums(&lines);
        assert!(text.starts_with(&format!("{}  crypto-store-sled/", hex::encode([1u8; 32]))));
        assert!(text.contains("\n\\0202"));
        assert_eq!(parse_checksums(&text).unwrap(), lines);
    }

    #[test]
    fn lines_under_a_folder_lose_its_prefix() {
        let lines = vec![
            ChecksumLine {
                sha256: [1; 32],
                path: "a/x".into(),
            },
            ChecksumLine {
                sha256: [2; 32],
                path: "ab/y".into(),
            },
        ];
        assert_eq!(
            lines_under(&lines, "a"),
            vec![ChecksumLine {
                sha256: [1; 32],
                path: "x".into()
            }]
        );
    }

    #[test]
    fn refuses_malformed_lines_and_escapes_from_the_folder() {
        assert_eq!(parse_checksums("abc  x\n"), Err(ChecksumError { line: 1 }));
        let h = "0".repeat(64);
        assert!(parse_checksums(&format!("{h}  ../etc/passwd\n")).is_err());
        assert!(parse_checksums(&format!("{h}  /abs\n")).is_err());
        assert_eq!(
            parse_checksums(&format!("{h} *bin\n")).unwrap()[0].path,
            "bin"
        );
    }
}
