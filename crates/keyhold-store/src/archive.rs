//! The export archive, `keyhold-archive/v1`: an instance's objects in one self-describing file,
//! sealed under a KEK that the customer's key wraps (or, only when asked, in plaintext).
//!
//! ```text
//! "keyhold-archive/v1\n"
//! header: one line of JSON (ArchiveHeader), "\n"
//! records: tag (1 byte) | length (u32, big-endian) | payload
//!   'O' an object's metadata (ArchivedObject JSON)
//!   'C' one chunk of the object before it (at most CHUNK_SIZE bytes of contents)
//!   'E' the end: a summary (ArchiveSummary JSON); a file without it is truncated
//! ```
//!
//! In a sealed archive every payload is a sealed chunk (`u16` length of the wrapped DEK, the
//! wrapped DEK, the ciphertext: the store's own chunk format) whose associated data binds it to
//! the archive's ID, the object's position in the archive, its name, the chunk's index and
//! whether it is the last. Objects cannot be dropped, reordered, moved between archives or
//! altered (metadata included), and truncation is detected, without any MAC of our own: the
//! same AES-256-GCM sealing as stored chunks ([`keyhold_cmek::seal_chunk`]). A plaintext
//! archive has the same framing with raw payloads and no integrity protection.

use keyhold_api::wire::Timestamp;
use keyhold_cmek::{ChunkId, Kek, SealedChunk, open_chunk, seal_chunk};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::StoreError;

/// First line of every archive.
pub const MAGIC: &[u8] = b"keyhold-archive/v1\n";
/// Longest header or record accepted (a chunk plus its wrapped DEK, with room to spare).
const MAX_RECORD: usize = keyhold_cmek::CHUNK_SIZE + 64 * 1024;

const TAG_OBJECT: u8 = b'O';
const TAG_CHUNK: u8 = b'C';
const TAG_END: u8 = b'E';

/// The archive's first line after the magic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveHeader {
    /// Random; bound into every sealed record, so records cannot move between archives.
    pub id: String,
    /// The instance exported.
    pub source: String,
    /// When the export was taken.
    pub create_time: Timestamp,
    /// The key wrapping the archive's KEK; `None` for a plaintext archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key: Option<String>,
    /// The version that wrapped it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_version: Option<String>,
    /// The KEK, wrapped (base64), with associated data [`keyhold_cmek::kek_aad`] of
    /// [`ArchiveHeader::resource`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_kek: Option<String>,
}

impl ArchiveHeader {
    /// The name the archive's KEK and records are bound to: `SOURCE/exports/ID`.
    pub fn resource(&self) -> String {
        format!("{}/exports/{}", self.source, self.id)
    }
}

/// An object's metadata in the archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedObject {
    /// Name within the instance.
    pub name: String,
    /// `Content-Type`.
    pub content_type: String,
    /// Bytes.
    pub size: u64,
    /// Number of chunk records that follow.
    pub chunk_count: u64,
    /// First upload.
    pub create_time: Timestamp,
    /// Latest upload.
    pub update_time: Timestamp,
}

/// The last record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveSummary {
    /// Objects in the archive.
    pub object_count: u64,
    /// Bytes of contents.
    pub size_bytes: u64,
}

/// Where a record sits, for its associated data. Metadata and the summary use indexes no
/// chunk can have.
fn record_id<'a>(resource: &'a str, position: u64, object: &'a str, index: u64, last: bool) -> ChunkId<'a> {
    ChunkId { resource, object, generation: position, index, last }
}
const META_INDEX: u64 = u64::MAX;
const END_POSITION: u64 = u64::MAX;

fn bad(message: impl Into<String>) -> StoreError {
    StoreError::FailedPrecondition(format!("The archive is not a valid keyhold-archive/v1 file: {}", message.into()))
}

fn io_error(e: std::io::Error) -> StoreError {
    StoreError::Internal(format!("archive I/O: {e}"))
}

fn encode_sealed(s: &SealedChunk) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + s.wrapped_dek.len() + s.ciphertext.len());
    out.extend_from_slice(&(s.wrapped_dek.len() as u16).to_be_bytes());
    out.extend_from_slice(&s.wrapped_dek);
    out.extend_from_slice(&s.ciphertext);
    out
}

fn decode_sealed(payload: &[u8]) -> Result<SealedChunk, StoreError> {
    if payload.len() < 2 {
        return Err(bad("a sealed record is too short"));
    }
    let n = u16::from_be_bytes([payload[0], payload[1]]) as usize;
    if payload.len() < 2 + n {
        return Err(bad("a sealed record is too short"));
    }
    Ok(SealedChunk { wrapped_dek: payload[2..2 + n].to_vec(), ciphertext: payload[2 + n..].to_vec() })
}

/// Writes an archive.
pub struct ArchiveWriter<W> {
    out: W,
    resource: String,
    kek: Option<std::sync::Arc<Kek>>,
    position: u64,
    current: Option<ArchivedObject>,
    summary: ArchiveSummary,
}

impl<W: AsyncWrite + Unpin> ArchiveWriter<W> {
    /// Starts an archive: the magic and the header. `kek` is `None` only for a plaintext one.
    pub async fn start(
        mut out: W,
        header: &ArchiveHeader,
        kek: Option<std::sync::Arc<Kek>>,
    ) -> Result<Self, StoreError> {
        let line = serde_json::to_string(header).map_err(|e| StoreError::Internal(e.to_string()))?;
        out.write_all(MAGIC).await.map_err(io_error)?;
        out.write_all(line.as_bytes()).await.map_err(io_error)?;
        out.write_all(b"\n").await.map_err(io_error)?;
        Ok(Self {
            out,
            resource: header.resource(),
            kek,
            position: 0,
            current: None,
            summary: ArchiveSummary { object_count: 0, size_bytes: 0 },
        })
    }

    async fn record(&mut self, tag: u8, id: ChunkId<'_>, data: &[u8]) -> Result<(), StoreError> {
        let payload = match &self.kek {
            Some(kek) => encode_sealed(&seal_chunk(kek, &id, data).map_err(|e| StoreError::Internal(e.to_string()))?),
            None => data.to_vec(),
        };
        self.out.write_all(&[tag]).await.map_err(io_error)?;
        self.out.write_all(&(payload.len() as u32).to_be_bytes()).await.map_err(io_error)?;
        self.out.write_all(&payload).await.map_err(io_error)
    }

    /// Starts an object; its `chunk_count` chunks follow.
    pub async fn object(&mut self, object: ArchivedObject) -> Result<(), StoreError> {
        self.position += 1;
        let json = serde_json::to_vec(&object).map_err(|e| StoreError::Internal(e.to_string()))?;
        let resource = self.resource.clone();
        self.record(TAG_OBJECT, record_id(&resource, self.position, "", META_INDEX, true), &json).await?;
        self.summary.object_count += 1;
        self.summary.size_bytes += object.size;
        self.current = Some(object);
        Ok(())
    }

    /// Chunk `index` of the current object.
    pub async fn chunk(&mut self, index: u64, data: &[u8]) -> Result<(), StoreError> {
        let object = self.current.clone().ok_or_else(|| StoreError::Internal("a chunk before its object".into()))?;
        let resource = self.resource.clone();
        let last = index + 1 == object.chunk_count;
        self.record(TAG_CHUNK, record_id(&resource, self.position, &object.name, index, last), data).await
    }

    /// Ends the archive and flushes it; returns the summary and the output.
    pub async fn finish(mut self) -> Result<(ArchiveSummary, W), StoreError> {
        let json = serde_json::to_vec(&self.summary).map_err(|e| StoreError::Internal(e.to_string()))?;
        let resource = self.resource.clone();
        self.record(TAG_END, record_id(&resource, END_POSITION, "", META_INDEX, true), &json).await?;
        self.out.flush().await.map_err(io_error)?;
        Ok((self.summary, self.out))
    }
}

/// Reads the header of an archive.
pub async fn read_header<R: AsyncRead + Unpin>(input: &mut R) -> Result<ArchiveHeader, StoreError> {
    let mut magic = vec![0u8; MAGIC.len()];
    input.read_exact(&mut magic).await.map_err(|_| bad("it does not start with keyhold-archive/v1"))?;
    if magic != MAGIC {
        return Err(bad("it does not start with keyhold-archive/v1"));
    }
    let mut line = Vec::new();
    loop {
        let b = input.read_u8().await.map_err(|_| bad("the header is cut off"))?;
        if b == b'\n' {
            break;
        }
        if line.len() >= MAX_RECORD {
            return Err(bad("the header is too long"));
        }
        line.push(b);
    }
    serde_json::from_slice(&line).map_err(|e| bad(format!("the header does not decode: {e}")))
}

/// What [`ArchiveReader::next`] found.
#[derive(Debug)]
pub enum ArchiveItem {
    /// An object's metadata; its chunks follow.
    Object(ArchivedObject),
    /// The contents of the current object's next chunk.
    Chunk(keyhold_crypto::Secret),
    /// The end, checked against what was read.
    End(ArchiveSummary),
}

/// Reads an archive's records after its header, opening and checking each.
pub struct ArchiveReader<R> {
    input: R,
    resource: String,
    kek: Option<std::sync::Arc<Kek>>,
    position: u64,
    current: Option<ArchivedObject>,
    next_chunk: u64,
    seen: ArchiveSummary,
}

impl<R: AsyncRead + Unpin> ArchiveReader<R> {
    /// Reads the records of the archive `header` began, with its unwrapped KEK (`None` for a
    /// plaintext archive).
    pub fn new(input: R, header: &ArchiveHeader, kek: Option<std::sync::Arc<Kek>>) -> Self {
        Self {
            input,
            resource: header.resource(),
            kek,
            position: 0,
            current: None,
            next_chunk: 0,
            seen: ArchiveSummary { object_count: 0, size_bytes: 0 },
        }
    }

    fn open(&self, id: ChunkId<'_>, payload: &[u8]) -> Result<keyhold_crypto::Secret, StoreError> {
        match &self.kek {
            // FAILED_PRECONDITION (400) like every other flaw of the file named by the request:
            // a damaged archive is not the server's own data lost, and a 500 (DATA_LOSS) made
            // clients retry and tests accept "400 or 500" (hardening, tests of tamper-evidence).
            Some(kek) => open_chunk(kek, &id, &decode_sealed(payload)?).map_err(|_| {
                StoreError::FailedPrecondition(
                    "A record of the archive failed authentication: it was altered, reordered, truncated or taken from another archive."
                        .into(),
                )
            }),
            None => Ok(keyhold_crypto::Secret::new(payload.to_vec())),
        }
    }

    /// The next record; an error for anything out of place.
    pub async fn next(&mut self) -> Result<ArchiveItem, StoreError> {
        let tag = self.input.read_u8().await.map_err(|_| bad("it ends before its end record (truncated)"))?;
        let len = self.input.read_u32().await.map_err(|_| bad("a record is cut off"))? as usize;
        if len > MAX_RECORD {
            return Err(bad("a record is too long"));
        }
        let mut payload = vec![0u8; len];
        self.input.read_exact(&mut payload).await.map_err(|_| bad("a record is cut off (truncated)"))?;
        let pending = self.current.as_ref().is_some_and(|o| self.next_chunk < o.chunk_count);
        match tag {
            TAG_CHUNK => {
                let object = self.current.clone().filter(|_| pending).ok_or_else(|| bad("a chunk out of place"))?;
                let index = self.next_chunk;
                let last = index + 1 == object.chunk_count;
                let data = self.open(record_id(&self.resource, self.position, &object.name, index, last), &payload)?;
                self.next_chunk += 1;
                Ok(ArchiveItem::Chunk(data))
            }
            TAG_OBJECT if !pending => {
                self.position += 1;
                let json = self.open(record_id(&self.resource, self.position, "", META_INDEX, true), &payload)?;
                let object: ArchivedObject = serde_json::from_slice(json.expose())
                    .map_err(|e| bad(format!("an object does not decode: {e}")))?;
                if object.chunk_count == 0 {
                    return Err(bad("an object without chunks"));
                }
                crate::model::check_object_name(&object.name)?;
                // Sizes come from the file: a plaintext archive can claim any (fuzzing found
                // two objects of u64::MAX bytes overflowing this sum, issue 15).
                self.seen.size_bytes = self
                    .seen
                    .size_bytes
                    .checked_add(object.size)
                    .ok_or_else(|| bad("the sizes of its objects add up past 2^64 bytes"))?;
                self.seen.object_count += 1;
                self.current = Some(object.clone());
                self.next_chunk = 0;
                Ok(ArchiveItem::Object(object))
            }
            TAG_END if !pending => {
                let json = self.open(record_id(&self.resource, END_POSITION, "", META_INDEX, true), &payload)?;
                let summary: ArchiveSummary =
                    serde_json::from_slice(json.expose()).map_err(|e| bad(format!("the end does not decode: {e}")))?;
                if summary.object_count != self.seen.object_count || summary.size_bytes != self.seen.size_bytes {
                    return Err(StoreError::FailedPrecondition(format!(
                        "The archive lists {} objects ({} bytes) but holds {} ({} bytes).",
                        summary.object_count, summary.size_bytes, self.seen.object_count, self.seen.size_bytes
                    )));
                }
                Ok(ArchiveItem::End(summary))
            }
            _ => Err(bad(format!("unexpected record {:?}", tag as char))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn header() -> ArchiveHeader {
        ArchiveHeader {
            id: "abc".into(),
            source: "projects/p/locations/l/instances/i".into(),
            create_time: Timestamp::now(),
            kms_key: Some("k".into()),
            kms_key_version: None,
            wrapped_kek: None,
        }
    }

    async fn archive(kek: Option<Arc<Kek>>) -> Vec<u8> {
        let mut w = ArchiveWriter::start(Vec::new(), &header(), kek).await.unwrap();
        let now = Timestamp::now();
        for (name, chunks) in [("a", vec![b"hello ".to_vec(), b"world".to_vec()]), ("b", vec![Vec::new()])] {
            let size = chunks.iter().map(Vec::len).sum::<usize>() as u64;
            let o = ArchivedObject {
                name: name.into(),
                content_type: "text/plain".into(),
                size,
                chunk_count: chunks.len() as u64,
                create_time: now,
                update_time: now,
            };
            w.object(o).await.unwrap();
            for (i, c) in chunks.iter().enumerate() {
                w.chunk(i as u64, c).await.unwrap();
            }
        }
        w.finish().await.unwrap().1
    }

    async fn read_all(bytes: &[u8], kek: Option<Arc<Kek>>) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut input = bytes;
        let h = read_header(&mut input).await?;
        let mut r = ArchiveReader::new(input, &h, kek);
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        loop {
            match r.next().await? {
                ArchiveItem::Object(o) => out.push((o.name, Vec::new())),
                ArchiveItem::Chunk(c) => out.last_mut().unwrap().1.extend_from_slice(c.expose()),
                ArchiveItem::End(_) => return Ok(out),
            }
        }
    }

    #[tokio::test]
    async fn round_trip_sealed_and_plain() {
        let kek = Arc::new(Kek::generate().unwrap());
        let sealed = archive(Some(kek.clone())).await;
        let got = read_all(&sealed, Some(kek)).await.unwrap();
        assert_eq!(got, vec![("a".to_string(), b"hello world".to_vec()), ("b".to_string(), Vec::new())]);
        assert!(!sealed.windows(5).any(|w| w == b"hello"), "sealed archive holds plaintext");
        let plain = archive(None).await;
        assert_eq!(read_all(&plain, None).await.unwrap()[0].1, b"hello world");
    }

    #[tokio::test]
    async fn tampering_truncation_and_wrong_key_are_refused() {
        let kek = Arc::new(Kek::generate().unwrap());
        let sealed = archive(Some(kek.clone())).await;
        // Every byte after the header flipped in turn: none goes unnoticed.
        let body_start = sealed.iter().position(|b| *b == b'\n').unwrap() + 1;
        let body_start = body_start + sealed[body_start..].iter().position(|b| *b == b'\n').unwrap() + 1;
        for i in (body_start..sealed.len()).step_by(7) {
            let mut t = sealed.clone();
            t[i] ^= 1;
            assert!(read_all(&t, Some(kek.clone())).await.is_err(), "flipped byte {i} accepted");
        }
        for cut in [body_start, sealed.len() - 1, sealed.len() - 40] {
            assert!(read_all(&sealed[..cut], Some(kek.clone())).await.is_err(), "truncation at {cut} accepted");
        }
        let other = Arc::new(Kek::generate().unwrap());
        assert_eq!(read_all(&sealed, Some(other)).await.unwrap_err().code(), keyhold_api::Code::FailedPrecondition);
        assert!(read_all(b"not an archive", None).await.is_err());
    }
}
