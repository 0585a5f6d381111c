//! A strict, allocation-light JSON reader for the two shapes every session value has: the
//! encrypted envelope `{"version":1,"ciphertext":[ints…],"nonce":[24 ints]}` and the session
//! pickle. It accepts a *subset* of what serde_json accepts (no escapes in keys or in the strings
//! it returns, no `null` for known fields, no duplicate known fields, plain unsigned integers) and
//! returns `None` for anything else, so that the caller falls back to the serde path, which stays
//! the single authority on damage and its classification. Whatever it accepts, serde_json accepts
//! with the same result (checked against it by the tests in `room_key`).

/// Nesting bound for skipped values (serde_json's own recursion limit is 128).
const MAX_DEPTH: u32 = 100;

pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, at: 0 }
    }

    #[inline]
    pub(crate) fn ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.at) {
            if matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                self.at += 1;
            } else {
                break;
            }
        }
    }

    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Skips whitespace, then consumes `byte` or fails.
    #[inline]
    pub(crate) fn eat(&mut self, byte: u8) -> Option<()> {
        self.ws();
        if self.peek()? == byte {
            self.at += 1;
            Some(())
        } else {
            None
        }
    }

    /// Only whitespace is left.
    pub(crate) fn at_end(&mut self) -> bool {
        self.ws();
        self.at == self.bytes.len()
    }

    /// A string without escapes and without control characters, valid UTF-8, borrowed.
    pub(crate) fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.at;
        loop {
            let b = *self.bytes.get(self.at)?;
            match b {
                b'"' => break,
                b'\\' => return None,
                0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        let text = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
        self.at += 1;
        Some(text)
    }

    /// An unsigned JSON integer (no sign, fraction or exponent; no leading zero) up to `max`.
    #[inline]
    pub(crate) fn uint(&mut self, max: u64) -> Option<u64> {
        self.ws();
        let first = *self.bytes.get(self.at)?;
        if !first.is_ascii_digit() {
            return None;
        }
        let mut value = u64::from(first - b'0');
        self.at += 1;
        if first == b'0' {
            // JSON forbids leading zeros; "0" itself is followed by a non-digit.
            if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return None;
            }
        } else {
            while let Some(&b) = self.bytes.get(self.at) {
                if !b.is_ascii_digit() {
                    break;
                }
                value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                if value > max {
                    return None;
                }
                self.at += 1;
            }
        }
        if value > max || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(value)
    }

    /// `[n, n, …]` of integers 0–255, appended to `out`.
    pub(crate) fn byte_array_into(&mut self, out: &mut Vec<u8>) -> Option<()> {
        self.byte_array(|value| {
            out.push(value);
            Some(())
        })
    }

    /// `[n, …]` of exactly `out.len()` integers 0–255, into `out`.
    pub(crate) fn byte_array_exact(&mut self, out: &mut [u8]) -> Option<()> {
        let mut n = 0;
        self.byte_array(|value| {
            *out.get_mut(n)? = value;
            n += 1;
            Some(())
        })?;
        (n == out.len()).then_some(())
    }

    /// `[n, n, …]` of integers 0–255, each handed to `sink`. The compact form serde_json writes
    /// (`[12,0,255]`) is read four bytes at a time; anything else (whitespace, say) goes element by
    /// element through [`Cursor::byte`].
    #[inline(always)]
    fn byte_array(&mut self, mut sink: impl FnMut(u8) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(());
        }
        let bytes = self.bytes;
        loop {
            // Compact elements: digits, then ',' or ']'.
            while let Some(window) = bytes.get(self.at..self.at + 4) {
                let window: [u8; 4] = window.try_into().expect("four bytes");
                let Some((value, digits, next)) = compact_byte(window) else {
                    break;
                };
                match next {
                    b',' => {
                        sink(value)?;
                        self.at += digits + 1;
                    }
                    b']' => {
                        sink(value)?;
                        self.at += digits + 1;
                        return Some(());
                    }
                    _ => break,
                }
            }
            // Anything else, one element at a time.
            sink(self.byte()?)?;
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// One integer 0–255, when it is not in the compact form.
    #[inline]
    fn byte(&mut self) -> Option<u8> {
        self.ws();
        let b = self.bytes;
        let i = self.at;
        let d0 = b.get(i)?.wrapping_sub(b'0');
        if d0 > 9 {
            return None;
        }
        let d1 = b.get(i + 1).map_or(10, |c| c.wrapping_sub(b'0'));
        if d1 > 9 || d0 == 0 {
            self.at = i + 1;
            return self.after_number(d0, d1);
        }
        let d2 = b.get(i + 2).map_or(10, |c| c.wrapping_sub(b'0'));
        if d2 > 9 {
            self.at = i + 2;
            return self.after_number(d0 * 10 + d1, d2);
        }
        let value = u16::from(d0) * 100 + u16::from(d1) * 10 + u16::from(d2);
        let d3 = b.get(i + 3).map_or(10, |c| c.wrapping_sub(b'0'));
        if value > 255 {
            return None;
        }
        self.at = i + 3;
        self.after_number(value as u8, d3)
    }

    /// `next` is the byte after the digits minus `b'0'` (10 at the end of input): another digit
    /// (a leading zero or a number too long), a fraction or an exponent is for serde to judge.
    #[inline]
    fn after_number(&mut self, value: u8, next: u8) -> Option<u8> {
        const DOT: u8 = b'.'.wrapping_sub(b'0');
        const LOWER_E: u8 = b'e'.wrapping_sub(b'0');
        const UPPER_E: u8 = b'E'.wrapping_sub(b'0');
        if next <= 9 || next == DOT || next == LOWER_E || next == UPPER_E {
            return None;
        }
        Some(value)
    }

    /// Skips one value of any type, checking its syntax as strictly as serde_json would.
    pub(crate) fn skip_value(&mut self) -> Option<()> {
        self.skip_nested(0)
    }

    fn skip_nested(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' => self.sequence(b'{', b'}', |c| {
                c.string()?;
                c.eat(b':')?;
                c.skip_nested(depth + 1)
            }),
            b'[' => self.sequence(b'[', b']', |c| c.skip_nested(depth + 1)),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.uint(u64::MAX).map(|_| ()),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.bytes.get(self.at..self.at + word.len())? == word {
            self.at += word.len();
            Some(())
        } else {
            None
        }
    }

    pub(crate) fn bool(&mut self) -> Option<bool> {
        self.ws();
        match self.peek()? {
            b't' => self.literal(b"true").map(|_| true),
            b'f' => self.literal(b"false").map(|_| false),
            _ => None,
        }
    }

    /// Walks an object: `field` is called with each key and must consume its value.
    pub(crate) fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.sequence(b'{', b'}', |c| {
            let key = c.string()?;
            c.eat(b':')?;
            field(c, key)
        })
    }

    /// `[ "…", … ]` of plain strings.
    pub(crate) fn string_array(&mut self) -> Option<Vec<String>> {
        let mut out = Vec::new();
        self.sequence(b'[', b']', |c| {
            out.push(c.string()?.to_owned());
            Some(())
        })?;
        Some(out)
    }

    /// `open item , item … close` (or `open close`): every list and object of JSON. `item` consumes
    /// one element.
    fn sequence(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(open)?;
        self.ws();
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            item(self)?;
            self.ws();
            match self.peek()? {
                b',' => self.at += 1,
                b if b == close => {
                    self.at += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

/// An integer 0–255 at the start of `w`, its digit count and the byte after it, found without
/// data-dependent branches (the digit counts of ciphertext bytes are random, so branching on them
/// mispredicts about once per element); `None` for anything else (a leading zero, a fourth digit,
/// a value above 255, no digit at all), which the caller leaves to the general path.
#[inline(always)]
fn compact_byte(w: [u8; 4]) -> Option<(u8, usize, u8)> {
    // Each byte minus '0' (for a digit: 0–9), and the high bit of every byte that is not a digit.
    let t = u32::from_le_bytes(w) ^ 0x3030_3030;
    let not_digit = (((t & 0x7f7f_7f7f) + 0x7676_7676) | t) & 0x8080_8080;
    let n = (not_digit.trailing_zeros() / 8) as usize; // 4 when all four are digits
    if n == 0 || n == 4 {
        return None;
    }
    let digits = t & (u32::MAX >> (32 - 8 * n));
    if n > 1 && digits & 0xff == 0 {
        return None; // a leading zero
    }
    // Right-align the digits in the low three bytes: [d0 d1 d2], [0 d0 d1] or [0 0 d0].
    let x = digits << (8 * (3 - n));
    let value = (x & 0xff) * 100 + ((x >> 8) & 0xff) * 10 + ((x >> 16) & 0xff);
    let value = u8::try_from(value).ok()?;
    Some((value, n, w[n]))
}

/// Sets a field once: a second occurrence is for serde to judge ("duplicate field").
#[inline]
pub(crate) fn once<T>(slot: &mut Option<T>, value: Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value?);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_arrays_take_only_plain_bytes() {
        let parse = |s: &str| {
            let mut out = Vec::new();
            let mut c = Cursor::new(s.as_bytes());
            c.byte_array_into(&mut out).and_then(|_| c.at_end().then_some(out))
        };
        let exact = |s: &str| {
            let mut out = [0u8; 3];
            Cursor::new(s.as_bytes()).byte_array_exact(&mut out).map(|_| out)
        };
        assert_eq!(exact("[1,2,3]"), Some([1, 2, 3]));
        assert_eq!(exact("[ 1 , 2 , 3 ]"), Some([1, 2, 3]));
        assert_eq!(exact("[1,2]"), None);
        assert_eq!(exact("[1,2,3,4]"), None);
        assert_eq!(parse("[0, 1,255 ,9]"), Some(vec![0, 1, 255, 9]));
        assert_eq!(parse("[]"), Some(vec![]));
        assert_eq!(parse(" [ 10 ] "), Some(vec![10]));
        assert_eq!(parse("[7]"), Some(vec![7]));
        assert_eq!(parse("[200,0,9,10,255,99,100]"), Some(vec![200, 0, 9, 10, 255, 99, 100]));
        assert_eq!(parse("[1,2 ,3, 4]"), Some(vec![1, 2, 3, 4]));
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(parse(&serde_json::to_string(&all).unwrap()), Some(all));
        for bad in ["[256]", "[01]", "[00]", "[0.5]", "[255e0]", "[12.]", "[1]]x", "[300,1]", "[1,01]", "[1,256]", "[-1]", "[1.0]", "[1e2]", "[1,]", "[,1]", "[1 2]", "[1", "[1000]", "[\"1\"]", "[2555]"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    /// The branch-free reading of a window agrees with the element-by-element one on every window
    /// over digits and the bytes that can follow them.
    #[test]
    fn compact_windows_agree_with_the_general_path() {
        let alphabet = b"0123456789,] .eE-x/:";
        let mut checked = 0;
        for &a in alphabet { for &b in alphabet { for &c in alphabet { for &d in alphabet {
            let w = [a, b, c, d];
            let compact = compact_byte(w).filter(|(_, _, next)| matches!(next, b',' | b']'));
            let mut cursor = Cursor::new(&w);
            let general = cursor.byte().map(|v| (v, cursor.at)).filter(|&(_, at)| at < 4 && matches!(w[at], b',' | b']'));
            // The general path also skips leading whitespace; the compact one leaves that to it.
            if compact.is_some() || w[0] != b' ' {
                assert_eq!(compact.map(|(v, n, _)| (v, n)), general, "{:?}", std::str::from_utf8(&w));
            }
            checked += usize::from(general.is_some());
        }}}}
        assert!(checked > 1000);
    }

    #[test]
    fn strings_and_skips_are_strict() {
        assert_eq!(Cursor::new(br#""a/b+c""#).string(), Some("a/b+c"));
        assert_eq!(Cursor::new(br#""a\"b""#).string(), None);
        assert_eq!(Cursor::new(b"\"a\x01\"").string(), None);
        assert_eq!(Cursor::new(b"\"\xff\"").string(), None);
        for ok in [r#"{"a":[1,{"b":null}],"c":true}"#, "[]", "{}", "false", "0", "123"] {
            let mut c = Cursor::new(ok.as_bytes());
            assert!(c.skip_value().is_some() && c.at_end(), "{ok}");
        }
        for bad in [r#"{"a":}"#, "[1,]", "tru", "nul", "-1", "1.5", "{\"a\" 1}", "01"] {
            let mut c = Cursor::new(bad.as_bytes());
            assert!(c.skip_value().is_none() || !c.at_end(), "{bad}");
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(Cursor::new(deep.as_bytes()).skip_value().is_none());
    }
}
