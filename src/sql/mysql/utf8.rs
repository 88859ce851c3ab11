//! Statement text that is not UTF-8 because of binary literals, made UTF-8
//! so that chorus can log it: drivers that interpolate parameters
//! themselves send bytes as `_binary'...'` with the raw bytes escaped in
//! the text (MariaDB Connector/J's client-side prepared statements,
//! mysqlclient, PHP's emulated prepares), which is legal SQL in a utf8mb4
//! session but not UTF-8. Each such literal becomes `_binary X'..'`: the
//! same bytes, the same character set and collation, and no escaping rules.

use super::lex::string_end;

/// The character sets an introducer may name (`_latin1'..'`): a word
/// starting with `_` that names none is an identifier.
const CHARSETS: &[&str] = &[
    "armscii8", "ascii", "big5", "binary", "cp1250", "cp1251", "cp1256", "cp1257", "cp850", "cp852", "cp866", "cp932",
    "dec8", "eucjpms", "euckr", "gb2312", "gbk", "geostd8", "greek", "hebrew", "hp8", "keybcs2", "koi8r", "koi8u",
    "latin1", "latin2", "latin5", "latin7", "macce", "macroman", "sjis", "swe7", "tis620", "ucs2", "ujis", "utf16",
    "utf16le", "utf32", "utf8", "utf8mb3", "utf8mb4",
];

/// Client character sets in which every byte below 0x80 is that ASCII
/// character (no multi-byte character hides a `\` or a quote), so that
/// chorus's reading of the text is the server's.
pub fn ascii_safe(charset: &str) -> bool {
    let c = charset.to_ascii_lowercase();
    c.starts_with("utf8") || matches!(c.as_str(), "latin1" | "ascii" | "binary")
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// `sql` as UTF-8 text that means the same, each string literal with a
/// character set introducer whose bytes are not UTF-8 written as
/// `_charset X'..'`; None when anything else is not UTF-8 (a literal
/// without an introducer, an identifier, a comment), or when such a literal
/// is followed by another string (MySQL joins adjacent strings). The
/// client's character set must be [`ascii_safe`]; `backslash_escapes` is
/// false under NO_BACKSLASH_ESCAPES.
pub fn hex_binary_literals(sql: &[u8], backslash_escapes: bool) -> Option<String> {
    let b = sql;
    let mut out: Vec<u8> = Vec::with_capacity(b.len() * 2);
    // The word just before (only whitespace since): a possible introducer.
    let mut word: Option<&[u8]> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let mut next_word = None;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => {
                out.push(c);
                i += 1;
                continue;
            }
            b'#' => i = line_end(b, i),
            b'-' if b.get(i + 1) == Some(&b'-') && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) => {
                i = line_end(b, i)
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match super::lex::executable_comment(b, i) {
                // An executable comment the server runs: its content is code.
                Some(code) => i = code,
                None => i = b[i + 2..].windows(2).position(|w| w == b"*/").map_or(b.len(), |k| i + 2 + k + 2),
            },
            b'\'' | b'"' => {
                let end = string_end(b, i, backslash_escapes);
                let literal = &b[i..end];
                let closed = end - i >= 2 && b[end - 1] == c;
                let introducer = word.is_some_and(|w| {
                    w.len() > 1 && w[0] == b'_' && CHARSETS.iter().any(|cs| cs.as_bytes().eq_ignore_ascii_case(&w[1..]))
                });
                if std::str::from_utf8(literal).is_err() {
                    if !introducer || !closed {
                        return None;
                    }
                    if !out.last().is_some_and(|c| c.is_ascii_whitespace()) {
                        out.push(b' ');
                    }
                    out.extend_from_slice(b"X'");
                    for byte in unescape(&literal[1..literal.len() - 1], c, backslash_escapes) {
                        out.extend_from_slice(format!("{byte:02X}").as_bytes());
                    }
                    out.push(b'\'');
                    let rest = b[end..].iter().find(|c| !c.is_ascii_whitespace());
                    if matches!(rest, Some(b'\'' | b'"')) {
                        return None;
                    }
                    i = end;
                    word = None;
                    continue;
                }
                i = end;
            }
            b'`' => {
                let mut j = i + 1;
                loop {
                    match b.get(j) {
                        None => break,
                        Some(b'`') if b.get(j + 1) == Some(&b'`') => j += 2,
                        Some(b'`') => {
                            j += 1;
                            break;
                        }
                        Some(_) => j += 1,
                    }
                }
                i = j;
            }
            b'@' => {
                let mut j = i + 1;
                if b.get(j) == Some(&b'@') {
                    j += 1;
                }
                if matches!(b.get(j), Some(b'\'' | b'"' | b'`')) {
                    j = string_end(b, j, b[j] != b'`' && backslash_escapes);
                } else {
                    while j < b.len() && (b[j].is_ascii_alphanumeric() || b"_$.".contains(&b[j])) {
                        j += 1;
                    }
                }
                i = j;
            }
            c if c.is_ascii_digit() => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if is_word_byte(c) => {
                while i < b.len() && is_word_byte(b[i]) {
                    i += 1;
                }
                next_word = Some(&b[start..i]);
            }
            _ => i += 1,
        }
        out.extend_from_slice(&b[start..i]);
        word = next_word;
    }
    String::from_utf8(out).ok()
}

fn line_end(b: &[u8], i: usize) -> usize {
    b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |k| i + k + 1)
}

/// The bytes a quoted string's `content` stands for, as the server reads it.
fn unescape(content: &[u8], quote: u8, backslash_escapes: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len());
    let mut i = 0;
    while i < content.len() {
        let c = content[i];
        if c == b'\\' && backslash_escapes && i + 1 < content.len() {
            let e = content[i + 1];
            match e {
                b'0' => out.push(0),
                b'b' => out.push(8),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'Z' => out.push(26),
                // LIKE's escapes keep their backslash.
                b'%' | b'_' => out.extend_from_slice(&[b'\\', e]),
                e => out.push(e),
            }
            i += 2;
        } else if c == quote && content.get(i + 1) == Some(&quote) {
            out.push(quote);
            i += 2;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(sql: &[u8]) -> Option<String> {
        hex_binary_literals(sql, true)
    }

    #[test]
    fn binary_literals_become_hex_with_their_introducer() {
        assert_eq!(
            hex(b"INSERT INTO t VALUES (1, _binary'\x00\xff\\0\\'\\\\x', 'caf\xc3\xa9')").as_deref(),
            Some("INSERT INTO t VALUES (1, _binary X'00FF00275C78', 'café')")
        );
        // Connector/J writes a space after the introducer; case and other
        // character sets are kept.
        assert_eq!(
            hex(b"UPDATE t SET b = _BINARY '\xfe''\\n\\Z\\%\\_' WHERE id = ?").as_deref(),
            Some("UPDATE t SET b = _BINARY X'FE270A1A5C255C5F' WHERE id = ?")
        );
        assert_eq!(hex(b"SELECT _latin1\"\xe9\"\"\"").as_deref(), Some("SELECT _latin1 X'E922'"));
        // Under NO_BACKSLASH_ESCAPES a backslash is itself.
        assert_eq!(
            hex_binary_literals(b"INSERT INTO t VALUES (_binary'\xff\\''')", false).as_deref(),
            Some("INSERT INTO t VALUES (_binary X'FF5C27')")
        );
    }

    #[test]
    fn utf8_literals_and_code_are_kept_as_they_are() {
        let sql = "INSERT INTO t /* ünï */ VALUES (_binary'abc', '\u{1F389}', `ç`, @`x`) -- é\n# ö\n";
        let mut bytes = sql.as_bytes().to_vec();
        bytes.extend_from_slice(b", _binary'\xff'");
        assert_eq!(hex(&bytes), Some(format!("{sql}, _binary X'FF'")));
    }

    #[test]
    fn other_bytes_that_are_not_utf8_stay_refused() {
        for sql in [
            &b"INSERT INTO t VALUES ('\xff')"[..],       // no introducer
            b"INSERT INTO t VALUES (N'\xff')",           // national: utf8
            b"INSERT INTO t VALUES (_nosuch'\xff')",     // not a character set
            b"INSERT INTO t VALUES (_binary'\xff' 'a')", // joined to the next string
            b"INSERT INTO t\xff VALUES (1)",
            b"INSERT INTO `\xff` VALUES (1)",
            b"INSERT INTO t VALUES (1) /* \xff */",
            b"INSERT INTO t VALUES (_binary'\xff", // unterminated
        ] {
            assert_eq!(hex(sql), None, "{}", String::from_utf8_lossy(sql));
        }
        // Quotes inside comments and identifiers do not start strings.
        assert_eq!(
            hex(b"SELECT `it's` # it's\n, _binary'\xff'").as_deref(),
            Some("SELECT `it's` # it's\n, _binary X'FF'")
        );
    }

    #[test]
    fn client_character_sets_chorus_reads_as_the_server_does() {
        assert!(ascii_safe("utf8mb4") && ascii_safe("utf8mb3") && ascii_safe("latin1") && ascii_safe("binary"));
        assert!(!ascii_safe("sjis") && !ascii_safe("gbk") && !ascii_safe("big5"));
    }
}
