//! The audit journal's file format (`keyhold serve --audit-sync INTERVAL`, issue 18).
//!
//! With a sync interval, the entries of reads, cryptographic calls and refusals are appended to
//! a journal on the node's own disk before the request is answered, and moved into the audit
//! log (where they are chained) in large batches behind it. This module is the format only; the
//! KMS's `AuditWriter` writes and replays it.
//!
//! A journal is a directory of segments. A segment is
//!
//! ```text
//! "keyhold-audit-journal/1 " NAME "\n"              the version line and the journal's name
//! frame*                                           each:
//!     len   u32 little-endian                      length of `entry`
//!     crc   u32 little-endian                      CRC-32C of `seq` and `entry`
//!     seq   u64 little-endian                      the entry's number in this journal (1, 2, ...)
//!     entry `len` bytes                            the [`crate::AuditRecord`] as JSON
//! ```
//!
//! NAME (1 to 64 of `0-9 a-z -`) is the writing process's own, drawn at its start: the log
//! records, per name, how far that journal is in it, so that two processes never share a mark
//! (not even two nodes started from copies of one data directory). Numbers rise by one from
//! frame to frame and across segments. A process killed in the middle of an append leaves a torn
//! last frame: [`read_segment`] returns the frames before it and says where and why it stopped,
//! and the writer never appends after a defect (it starts a new segment).

use crate::EncodedRecord;

/// The first line of every segment begins so (the format and its version), then the journal's
/// name and a newline ([`segment_header`]).
pub const SEGMENT_MAGIC: &[u8] = b"keyhold-audit-journal/1 ";
/// The longest journal name.
pub const MAX_NAME_BYTES: usize = 64;

/// Whether `name` can name a journal: 1 to [`MAX_NAME_BYTES`] of `0-9 a-z -`.
pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_BYTES).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}

/// The first line of a segment of journal `name` (a name that is not [`valid_name`] is refused).
pub fn segment_header(name: &str) -> Option<Vec<u8>> {
    valid_name(name).then(|| [SEGMENT_MAGIC, name.as_bytes(), b"\n"].concat())
}

/// Whether `bytes` is the beginning of a version line cut short (a process killed while it
/// created the segment), as opposed to something else.
pub fn is_cut_header(bytes: &[u8]) -> bool {
    if bytes.len() <= SEGMENT_MAGIC.len() {
        return SEGMENT_MAGIC.starts_with(bytes);
    }
    bytes.starts_with(SEGMENT_MAGIC)
        && bytes.len() - SEGMENT_MAGIC.len() <= MAX_NAME_BYTES
        && bytes[SEGMENT_MAGIC.len()..].iter().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || *b == b'-')
}
/// The largest entry a frame may hold (an entry is a few hundred bytes; anything near this is
/// damage, not an entry).
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Bytes of a frame before its entry.
pub const FRAME_HEADER_BYTES: usize = 16;

/// An entry longer than [`MAX_ENTRY_BYTES`]: it has no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryTooLarge(pub usize);

impl std::fmt::Display for EntryTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an audit entry of {} bytes is over the journal's limit of {MAX_ENTRY_BYTES}", self.0)
    }
}

/// Appends one frame holding `entry_json` under number `seq` to `out` (nothing if the entry is
/// too large).
pub fn encode_frame(out: &mut Vec<u8>, seq: u64, entry_json: &[u8]) -> Result<(), EntryTooLarge> {
    if entry_json.len() > MAX_ENTRY_BYTES {
        return Err(EntryTooLarge(entry_json.len()));
    }
    out.extend_from_slice(&(entry_json.len() as u32).to_le_bytes());
    out.extend_from_slice(&frame_crc(seq, entry_json).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(entry_json);
    Ok(())
}

fn frame_crc(seq: u64, entry_json: &[u8]) -> u32 {
    let mut covered = Vec::with_capacity(8 + entry_json.len());
    covered.extend_from_slice(&seq.to_le_bytes());
    covered.extend_from_slice(entry_json);
    keyhold_crypto::crc32c(&covered)
}

/// Why [`read_segment`] stopped before the end of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentDefect {
    /// The segment does not begin with a version line of this format naming a journal
    /// (another format or version, or a file cut inside its first line).
    Header,
    /// The last frame is cut short at this offset: a write the process did not finish.
    Torn {
        /// Where the frame begins.
        offset: usize,
    },
    /// The frame at this offset fails its checksum, is longer than [`MAX_ENTRY_BYTES`], is out
    /// of sequence or does not hold an entry: damage.
    Corrupt {
        /// Where the frame begins.
        offset: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl std::fmt::Display for SegmentDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentDefect::Header => write!(f, "it does not begin with the journal's version line"),
            SegmentDefect::Torn { offset } => write!(f, "its last frame, at byte {offset}, is cut short"),
            SegmentDefect::Corrupt { offset, reason } => write!(f, "the frame at byte {offset} is damaged: {reason}"),
        }
    }
}

/// A segment read back: its journal, its entries in order, and why reading stopped early, if
/// it did.
#[derive(Debug, Default)]
pub struct Segment {
    /// The journal's name ("" when the version line is missing or damaged).
    pub journal: String,
    /// `(seq, entry)` of every whole frame before the first defect.
    pub entries: Vec<(u64, EncodedRecord)>,
    /// What ended the read before the end of the bytes.
    pub defect: Option<SegmentDefect>,
}

/// Reads the frames of one segment. `first_seq` is the number its first frame must carry
/// (`None`: whatever the first frame says).
pub fn read_segment(bytes: &[u8], first_seq: Option<u64>) -> Segment {
    let mut segment = Segment::default();
    let header = bytes.strip_prefix(SEGMENT_MAGIC).and_then(|after| {
        let end = after.iter().take(MAX_NAME_BYTES + 1).position(|b| *b == b'\n')?;
        let name = std::str::from_utf8(&after[..end]).ok().filter(|n| valid_name(n))?;
        Some((name.to_string(), &after[end + 1..]))
    });
    let Some((journal, mut rest)) = header else {
        segment.defect = Some(SegmentDefect::Header);
        return segment;
    };
    let mut offset = bytes.len() - rest.len();
    segment.journal = journal;
    let mut expected = first_seq;
    while !rest.is_empty() {
        let corrupt = |reason: String| Some(SegmentDefect::Corrupt { offset, reason });
        if rest.len() < FRAME_HEADER_BYTES {
            segment.defect = Some(SegmentDefect::Torn { offset });
            return segment;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let seq = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
        if len > MAX_ENTRY_BYTES {
            segment.defect = corrupt(format!("it claims {len} bytes"));
            return segment;
        }
        let Some(entry) = rest.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
            segment.defect = Some(SegmentDefect::Torn { offset });
            return segment;
        };
        if frame_crc(seq, entry) != crc {
            segment.defect = corrupt("its checksum does not match".into());
            return segment;
        }
        if expected.is_some_and(|e| e != seq) {
            segment.defect = corrupt(format!("it is entry {seq}, expected {}", expected.unwrap_or_default()));
            return segment;
        }
        match EncodedRecord::decode(entry) {
            Ok(record) => segment.entries.push((seq, record)),
            Err(e) => {
                segment.defect = corrupt(format!("its entry does not decode: {e}"));
                return segment;
            }
        }
        expected = seq.checked_add(1);
        offset += FRAME_HEADER_BYTES + len;
        rest = &rest[FRAME_HEADER_BYTES + len..];
    }
    segment
}

/// The file name of the segment whose first entry is `first_seq` (zero-padded, so that names
/// sort as numbers).
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.journal")
}

/// The first entry number of a segment file name written by [`segment_file_name`].
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".journal")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::record;

    const HEADER_LEN: usize = SEGMENT_MAGIC.len() + 4;

    fn segment(first: u64, methods: &[&str]) -> Vec<u8> {
        let mut out = segment_header("j-1").unwrap();
        for (i, m) in methods.iter().enumerate() {
            encode_frame(&mut out, first + i as u64, &serde_json::to_vec(&record(m)).unwrap()).unwrap();
        }
        out
    }

    #[test]
    fn frames_read_back_in_order() {
        let bytes = segment(7, &["Encrypt", "Decrypt", "GetCryptoKey"]);
        let read = read_segment(&bytes, Some(7));
        assert_eq!(read.defect, None);
        let got: Vec<_> = read.entries.iter().map(|(s, r)| (*s, r.method())).collect();
        assert_eq!(got, [(7, "Encrypt"), (8, "Decrypt"), (9, "GetCryptoKey")]);
        assert_eq!(read.entries[0].1, crate::EncodedRecord::new(record("Encrypt")).unwrap());
        assert_eq!(read.journal, "j-1");
    }

    #[test]
    fn a_frame_is_read_back_as_the_text_it_holds() {
        // Not what this build writes (spacing, key order, a newer build's field), still an
        // entry: the log gets these bytes, not a re-serialization.
        let mut value = serde_json::to_value(record("Encrypt")).unwrap();
        value["fieldOfANewerBuild"] = 1.into();
        let text = serde_json::to_string_pretty(&value).unwrap();
        let mut bytes = segment_header("j-1").unwrap();
        encode_frame(&mut bytes, 1, text.as_bytes()).unwrap();
        let read = read_segment(&bytes, Some(1));
        assert_eq!(read.defect, None);
        assert_eq!(read.entries.len(), 1);
        assert_eq!(read.entries[0].1.json(), text);
        assert_eq!(read.entries[0].1.method(), "Encrypt");
    }

    #[test]
    fn a_cut_at_every_byte_of_the_last_frame_keeps_the_whole_frames() {
        let whole = segment(1, &["Encrypt", "Decrypt"]);
        let first_end = HEADER_LEN + FRAME_HEADER_BYTES + serde_json::to_vec(&record("Encrypt")).unwrap().len();
        for cut in first_end + 1..whole.len() {
            let read = read_segment(&whole[..cut], Some(1));
            assert_eq!(read.entries.len(), 1, "cut at {cut}");
            assert_eq!(read.defect, Some(SegmentDefect::Torn { offset: first_end }), "cut at {cut}");
        }
        assert_eq!(read_segment(&whole[..first_end], Some(1)).defect, None);
    }

    #[test]
    fn damage_stops_the_read_at_the_damaged_frame() {
        let whole = segment(1, &["Encrypt", "Decrypt", "Encrypt"]);
        let second = HEADER_LEN + FRAME_HEADER_BYTES + serde_json::to_vec(&record("Encrypt")).unwrap().len();
        // A flipped bit in the second entry.
        let mut flipped = whole.clone();
        flipped[second + FRAME_HEADER_BYTES + 3] ^= 0x20;
        let read = read_segment(&flipped, Some(1));
        assert_eq!(read.entries.len(), 1);
        assert!(matches!(read.defect, Some(SegmentDefect::Corrupt { offset, .. }) if offset == second));
        // An absurd length.
        let mut long = whole.clone();
        long[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(read_segment(&long, Some(1)).defect, Some(SegmentDefect::Corrupt { .. })));
        // Out of sequence.
        assert!(
            matches!(read_segment(&whole, Some(2)).defect, Some(SegmentDefect::Corrupt { offset, .. }) if offset == HEADER_LEN)
        );
        // Not a journal.
        assert_eq!(read_segment(b"keyhold-audit-journal/2 j-1\n", None).defect, Some(SegmentDefect::Header));
        assert_eq!(read_segment(b"keyhold-audit-journal/1 J\n", None).defect, Some(SegmentDefect::Header));
        assert_eq!(read_segment(b"keyhold-audit-journal/1 \n", None).defect, Some(SegmentDefect::Header));
        assert_eq!(read_segment(b"", None).defect, Some(SegmentDefect::Header));
    }

    #[test]
    fn an_entry_over_the_limit_gets_no_frame() {
        let mut out = Vec::new();
        assert_eq!(
            encode_frame(&mut out, 1, &vec![b'x'; MAX_ENTRY_BYTES + 1]),
            Err(EntryTooLarge(MAX_ENTRY_BYTES + 1))
        );
        assert!(out.is_empty());
        assert_eq!(encode_frame(&mut out, 1, b"{}"), Ok(()));
        assert_eq!(out.len(), FRAME_HEADER_BYTES + 2);
    }

    #[test]
    fn journal_names_and_cut_version_lines() {
        assert!(valid_name("0a-f") && !valid_name("") && !valid_name("A") && !valid_name(&"a".repeat(65)));
        assert_eq!(segment_header("x/y"), None);
        let header = segment_header("abc").unwrap();
        assert_eq!(read_segment(&header, None).journal, "abc");
        for cut in 0..header.len() {
            assert!(is_cut_header(&header[..cut]), "cut at {cut}");
            assert_eq!(read_segment(&header[..cut], None).defect, Some(SegmentDefect::Header));
        }
        assert!(!is_cut_header(b"keyhold-audit-journal/2"));
        assert!(!is_cut_header(b"something else entirely"));
    }

    #[test]
    fn segment_names_sort_as_numbers() {
        assert_eq!(segment_file_name(42), "00000000000000000042.journal");
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_segment_file_name("42.journal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.journal"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }
}
