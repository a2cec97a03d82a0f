//! Just enough DER to read and write the private-key containers (PKCS#8, PKCS#1, SEC1) that ring
//! does not take apart for us. Anything unusual (indefinite lengths, lengths over 4 bytes, tags
//! over 30) is treated as malformed.

pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const INTEGER: u8 = 0x02;
pub(super) const BIT_STRING: u8 = 0x03;
pub(super) const OCTET_STRING: u8 = 0x04;
pub(super) const NULL: u8 = 0x05;
pub(super) const OID: u8 = 0x06;
pub(super) const CONTEXT_0: u8 = 0xA0;
pub(super) const CONTEXT_1: u8 = 0xA1;

/// A forward-only reader over the elements of one DER value's contents.
pub(super) struct Reader<'a> {
    input: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(input: &'a [u8]) -> Self {
        Self { input }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    pub(super) fn peek_tag(&self) -> Option<u8> {
        self.input.first().copied()
    }

    /// Reads the next element: its tag, its contents and its whole encoding.
    pub(super) fn read_any(&mut self) -> Option<(u8, &'a [u8], &'a [u8])> {
        let (&tag, rest) = self.input.split_first()?;
        if tag & 0x1F == 0x1F {
            return None; // high tag numbers never occur in these structures
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7F);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        let header_len = self.input.len() - rest.len();
        let whole = &self.input[..header_len + len];
        let value = &rest[..len];
        self.input = &rest[len..];
        Some((tag, value, whole))
    }

    /// Reads the next element, which must have `tag`, and returns its contents.
    pub(super) fn read(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.read_any()? {
            (t, value, _) if t == tag => Some(value),
            _ => None,
        }
    }

    /// Reads the next element if it has `tag`.
    pub(super) fn read_optional(&mut self, tag: u8) -> Option<&'a [u8]> {
        if self.peek_tag() == Some(tag) {
            self.read(tag)
        } else {
            None
        }
    }
}

/// The contents of the single SEQUENCE that makes up all of `input`.
pub(super) fn sequence(input: &[u8]) -> Option<Reader<'_>> {
    let mut outer = Reader::new(input);
    let contents = outer.read(SEQUENCE)?;
    outer.is_empty().then(|| Reader::new(contents))
}

/// A small non-negative INTEGER (versions).
pub(super) fn small_uint(value: &[u8]) -> Option<u8> {
    match value {
        [v] if *v < 0x80 => Some(*v),
        _ => None,
    }
}

/// Big-endian integer bytes without leading zero bytes.
pub(super) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Encodes one element.
pub(super) fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 6);
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let bytes = strip_leading_zeros(&bytes);
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(contents);
    out
}

/// Encodes a constructed element from already-encoded children.
pub(super) fn constructed(tag: u8, children: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &children.concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_short_and_long_lengths() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let contents = vec![7u8; len];
            let encoded = tlv(OCTET_STRING, &contents);
            let mut r = Reader::new(&encoded);
            let (tag, value, whole) = r.read_any().unwrap();
            assert_eq!(tag, OCTET_STRING);
            assert_eq!(value, &contents[..]);
            assert_eq!(whole, &encoded[..]);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn rejects_truncated_and_indefinite() {
        assert!(Reader::new(&[0x30, 0x05, 1, 2]).read_any().is_none());
        assert!(Reader::new(&[0x30, 0x80, 0, 0]).read_any().is_none());
        assert!(Reader::new(&[0x30]).read_any().is_none());
        assert!(Reader::new(&[0x1F, 0x01, 0x00]).read_any().is_none());
    }

    #[test]
    fn strips_zeros() {
        assert_eq!(strip_leading_zeros(&[0, 0, 1, 0]), &[1, 0]);
        assert_eq!(strip_leading_zeros(&[0, 0]), &[] as &[u8]);
    }
}
