//! File names as the supervisor handles them: Linux names are bytes, the supervisor's paths
//! and the policy's rules are `str`. A name that is not valid UTF-8 is carried losslessly: each
//! byte that is not part of valid UTF-8 becomes one escape character, U+10FF00 + the byte
//! (the last 256 code points of plane 16, private use). So that the escape is never ambiguous,
//! a valid name that itself holds one of those code points has the bytes of that character
//! escaped the same way. [`to_bytes`] undoes [`from_bytes`] exactly, before every system call.
//!
//! The policy refuses rules containing escape characters (`policy::check_path`), so an escaped
//! component never equals a rule's component: it matches only `*`, and is judged by the
//! rules on the directories above it, as the raw name would be.

use std::ffi::CString;

const BASE: u32 = 0x10_FF00;

fn escape(b: u8) -> char {
    char::from_u32(BASE + u32::from(b)).expect("U+10FF00..=U+10FFFF are chars")
}

/// Whether `c` is one of the escape characters.
pub fn is_escape(c: char) -> bool {
    (BASE..=BASE + 0xff).contains(&u32::from(c))
}

fn push_valid(out: &mut String, s: &str) {
    for c in s.chars() {
        if is_escape(c) {
            let mut b = [0u8; 4];
            for byte in c.encode_utf8(&mut b).bytes() {
                out.push(escape(byte));
            }
        } else {
            out.push(c);
        }
    }
}

/// [`from_bytes`] of an owned buffer: valid UTF-8 without a 0xF4 byte (which every escape
/// character's encoding starts with), the common case, is taken as it is, without a copy.
pub fn from_vec(bytes: Vec<u8>) -> String {
    if bytes.contains(&0xF4) {
        return from_bytes(&bytes);
    }
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => from_bytes(e.as_bytes()),
    }
}

/// A name (or path) of bytes as the supervisor's string.
pub fn from_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    let mut rest = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                push_valid(&mut out, s);
                return out;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                push_valid(&mut out, std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(after.len());
                for b in &after[..bad] {
                    out.push(escape(*b));
                }
                rest = &after[bad..];
            }
        }
    }
}

/// The bytes a string of [`from_bytes`] stands for.
pub fn to_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut b = [0u8; 4];
    for c in s.chars() {
        if is_escape(c) {
            out.push((u32::from(c) - BASE) as u8);
        } else {
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
    }
    out
}

/// The name for a system call; EINVAL for an embedded NUL (which no name read from a C
/// string holds).
pub fn to_c(s: &str) -> Result<CString, i32> {
    CString::new(to_bytes(s)).map_err(|_| libc::EINVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        let cases: &[&[u8]] = &[
            b"plain",
            b"caf\xc3\xa9",
            b"bad\xff\xfename",
            b"\x80",
            b"trunc\xe2\x82",
            // A valid name holding an escape character itself.
            "x\u{10FF41}y".as_bytes(),
            b"/dir/\xc0\xaf/..",
        ];
        let mut seen = std::collections::HashSet::new();
        for c in cases {
            let s = from_bytes(c);
            assert_eq!(to_bytes(&s), *c, "{c:?} -> {s:?}");
            assert_eq!(from_vec(c.to_vec()), s, "{c:?}");
            assert!(seen.insert(s.clone()), "{c:?}");
        }
        assert_eq!(from_bytes(b"plain"), "plain");
        assert_eq!(from_bytes(b"a/\xff"), "a/\u{10FFFF}");
        // A name holding an escape character is escaped byte by byte, never left as is.
        assert_eq!(from_bytes("\u{10FF41}".as_bytes()).chars().count(), 4);
    }

    #[test]
    fn escapes_never_hide_a_slash_or_a_nul() {
        for b in 0u8..=255 {
            let s = from_bytes(&[b]);
            assert_eq!(s.contains('/'), b == b'/');
            assert_eq!(to_bytes(&s), [b]);
        }
        assert_eq!(to_c("a\0b"), Err(libc::EINVAL));
    }
}
