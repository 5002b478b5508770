//! Event ids and trace ids as audit rows store them. Nearly all are UUIDs (MeshGuard's event ids
//! and generated trace ids are UUIDv7) or W3C trace ids (32 hex digits from a `traceparent`):
//! stored as their 16 bytes, the id's unique index and the trace index shrink with the row.
//! Any other text (a trace id a client chose, an id an embedder chose) is kept as it is. The text
//! read back is always the text written, byte for byte: the hash chain covers it.
//!
//! | text | stored |
//! |---|---|
//! | a UUID, lowercase and hyphenated | its 16 bytes |
//! | 32 lowercase hex digits | `0xFE`, then their 16 bytes |
//! | any other text of 16 bytes | `0xFF`, then the text |
//! | any other text | the text |
//!
//! UTF-8 text never starts with `0xFE` or `0xFF`, so the forms cannot be mistaken for each other.

use std::str::Utf8Error;

/// Marks 32 hex digits stored as 16 bytes.
const HEX_32: u8 = 0xFE;
/// Marks a 16-byte text that is no UUID, so that it is not read back as one.
const TEXT_16: u8 = 0xFF;

/// The longest text a stored id is written back into (a hyphenated UUID).
pub(super) type TextBuffer = [u8; 36];

/// The bytes to store for `text`.
pub(super) fn to_stored(text: &str) -> Vec<u8> {
    if let Ok(uuid) = uuid::Uuid::try_parse(text) {
        let mut canonical = [0_u8; 36];
        if uuid.hyphenated().encode_lower(&mut canonical).as_bytes() == text.as_bytes() {
            return uuid.as_bytes().to_vec();
        }
    }
    let mut digits = [0_u8; 17];
    if text.len() == 32
        && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && let Some(bytes) = digits.get_mut(1..)
        && hex::decode_to_slice(text, bytes).is_ok()
    {
        digits[0] = HEX_32;
        return digits.to_vec();
    }
    if text.len() == 16 {
        let mut marked = Vec::with_capacity(17);
        marked.push(TEXT_16);
        marked.extend_from_slice(text.as_bytes());
        return marked;
    }
    text.as_bytes().to_vec()
}

/// The text `stored` holds, written into `buffer` when it is kept as bytes. Stored bytes that
/// are none of the forms above (a hand edit) are read as text, so that verification reports the
/// event as altered rather than failing to read it.
pub(super) fn read<'a>(stored: &'a [u8], buffer: &'a mut TextBuffer) -> Result<&'a str, Utf8Error> {
    match stored {
        [TEXT_16, text @ ..] if text.len() == 16 => std::str::from_utf8(text),
        [HEX_32, bytes @ ..] if bytes.len() == 16 => {
            let out = buffer.get_mut(..32).unwrap_or_default();
            // 16 bytes always fit 32 digits, and hex digits are UTF-8.
            let _ = hex::encode_to_slice(bytes, out);
            std::str::from_utf8(out)
        }
        _ => match uuid::Uuid::from_slice(stored) {
            Ok(uuid) => Ok(uuid.hyphenated().encode_lower(buffer)),
            Err(_) => std::str::from_utf8(stored),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> usize {
        let stored = to_stored(text);
        let mut buffer = [0; 36];
        assert_eq!(read(&stored, &mut buffer), Ok(text), "{text:?}");
        stored.len()
    }

    #[test]
    fn uuids_and_trace_ids_take_16_bytes_and_read_back_as_written() {
        assert_eq!(round_trip("01a2491a-936f-724d-991e-1edfdf22d5ce"), 16);
        assert_eq!(round_trip("4bf92f3577b34da6a3ce929d0e0e4736"), 17);
    }

    #[test]
    fn other_spellings_are_kept_as_text() {
        // Not canonical: read back as a canonical UUID they would change the hash.
        assert_eq!(round_trip("01A2491A-936F-724D-991E-1EDFDF22D5CE"), 36);
        assert_eq!(round_trip("{01a2491a-936f-724d-991e-1edfdf22d5ce}"), 38);
        assert_eq!(
            round_trip("urn:uuid:01a2491a-936f-724d-991e-1edfdf22d5ce"),
            45
        );
        assert_eq!(round_trip("4BF92F3577B34DA6A3CE929D0E0E4736"), 32);
        assert_eq!(round_trip("ev-1"), 4);
        assert_eq!(round_trip(""), 0);
        assert_eq!(round_trip("évènement-ü"), 14);
    }

    #[test]
    fn a_text_of_16_bytes_is_not_read_as_a_uuid() {
        assert_eq!(round_trip("0123456789abcdef"), 17);
        assert_eq!(round_trip("a trace of 16 b."), 17);
        assert_eq!(round_trip("0123456789abcdef0"), 17);
    }

    #[test]
    fn hand_edited_bytes_read_as_text_or_fail_as_utf8() {
        let mut buffer = [0; 36];
        assert_eq!(read(b"forged", &mut buffer), Ok("forged"));
        assert!(read(&[0xFE, 1, 2], &mut buffer).is_err());
        assert!(read(&[0xC3], &mut buffer).is_err());
    }
}
