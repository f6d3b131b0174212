//! A sans-IO decoder of aws-chunked bodies (the three `STREAMING-*` modes):
//! feed it the body's bytes as they come, take the payload out, and call
//! `finish` at the end. It checks every chunk signature and the trailer's;
//! the trailing checksum's value is `checksum::ChecksumSet`'s to check.
//!
//! ```text
//!  signed:    <hex>;chunk-signature=<sig>\r\n <data> \r\n ... 0;chunk-signature=<sig>\r\n \r\n
//!  +trailer:  ... 0;chunk-signature=<sig>\r\n x-amz-checksum-crc32:<b64>\r\n
//!                 x-amz-trailer-signature:<sig>\r\n \r\n
//!  unsigned:  <hex>\r\n <data> \r\n ... 0\r\n x-amz-checksum-crc32:<b64>\r\n \r\n
//! ```
//!
//! Payload is handed out as it arrives, as slices of the input (no copy), so
//! memory does not grow with the chunk size: only a header line is buffered.
//! A chunk's signature can only be checked at its end, so nothing the decoder
//! gave out is authentic until `finish` returns `Ok`: the caller makes nothing
//! visible before.

use bytes::Bytes;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::error::{ErrorCode, S3Error};
use crate::sigv4::{PayloadMode, SigningKey, Verified, EMPTY_SHA256};

/// Bounds on what a body may make the decoder hold or accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkedLimits {
    /// The largest chunk. SDKs send 64 KiB to 1 MiB; memory does not depend
    /// on it (chunks pass through), so this only refuses absurd framing.
    pub max_chunk_size: u64,
    /// The longest chunk-header or trailer line, CRLF included (a signed
    /// chunk header is about 90 bytes).
    pub max_line: usize,
    /// How many trailer lines, the signature included.
    pub max_trailers: usize,
}

impl Default for ChunkedLimits {
    fn default() -> Self {
        ChunkedLimits {
            max_chunk_size: 16 << 20,
            max_line: 4096,
            max_trailers: 8,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    #[error("malformed aws-chunked body: {0}")]
    Malformed(&'static str),
    #[error("a header or trailer line is longer than {0} bytes")]
    LineTooLong(usize),
    #[error("a chunk of {size} bytes is larger than the limit of {limit}")]
    ChunkTooLarge { size: u64, limit: u64 },
    #[error("the chunks carry {actual}+ bytes, x-amz-decoded-content-length says {declared}")]
    LengthMismatch { declared: u64, actual: u64 },
    #[error("the body ended before its final chunk")]
    Truncated,
    #[error("a chunk signature does not match")]
    ChunkSignatureMismatch,
    #[error("the trailer signature does not match")]
    TrailerSignatureMismatch,
    #[error("the trailer has no x-amz-trailer-signature")]
    MissingTrailerSignature,
    #[error("trailer {0} was not declared in x-amz-trailer")]
    UndeclaredTrailer(String),
    #[error("more than {0} trailer lines")]
    TooManyTrailers(usize),
    #[error("bytes after the end of the body")]
    TrailingData,
}

impl From<ChunkedError> for S3Error {
    fn from(e: ChunkedError) -> Self {
        use ChunkedError::*;
        let code = match &e {
            ChunkSignatureMismatch | TrailerSignatureMismatch => ErrorCode::SignatureDoesNotMatch,
            Truncated | LengthMismatch { .. } => ErrorCode::IncompleteBody,
            _ => ErrorCode::InvalidRequest,
        };
        S3Error::with_message(code, e.to_string())
    }
}

/// What a signed chunk's string to sign needs from the request.
#[derive(Clone, Debug)]
struct ChunkSigner {
    key: SigningKey,
    amz_date: String,
    scope: String,
}

impl ChunkSigner {
    /// `AWS4-HMAC-SHA256-PAYLOAD\n<time>\n<scope>\n<previous>\n<hash("")>\n<hash(chunk)>`
    fn chunk_string(&self, previous: &[u8; 32], chunk_hash: &[u8]) -> String {
        format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{}",
            self.amz_date,
            self.scope,
            hex::encode(previous),
            hex::encode(chunk_hash)
        )
    }

    /// `AWS4-HMAC-SHA256-TRAILER\n<time>\n<scope>\n<previous>\n<hash(trailers)>`,
    /// the trailers as `name:value\n` sorted by name.
    fn trailer_string(&self, previous: &[u8; 32], trailers: &[(String, String)]) -> String {
        let mut sorted: Vec<&(String, String)> = trailers.iter().collect();
        sorted.sort();
        let canonical: String = sorted.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            hex::encode(previous),
            hex::encode(Sha256::digest(canonical.as_bytes()))
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting `<hex>[;chunk-signature=<sig>]\r\n`.
    Header,
    /// Inside a chunk's data.
    Data,
    /// Expecting the `\r\n` after a chunk's data.
    DataEnd,
    /// After the final chunk, without trailers: expecting `\r\n`.
    FinalLine,
    /// After the final chunk, reading trailer lines up to an empty one.
    Trailers,
    Done,
}

/// The incremental aws-chunked decoder. See the module doc.
pub struct ChunkedDecoder {
    signer: Option<ChunkSigner>,
    previous: [u8; 32],
    has_trailer: bool,
    declared_trailers: Vec<String>,
    declared_len: u64,
    decoded_len: u64,
    limits: ChunkedLimits,
    state: State,
    line: Vec<u8>,
    chunk_remaining: u64,
    chunk_hash: Sha256,
    chunk_signature: [u8; 32],
    trailers: Vec<(String, String)>,
    trailer_signature: Option<[u8; 32]>,
    trailer_lines: usize,
    /// An empty line came between the final chunk and the trailers.
    leading_empty_seen: bool,
}

impl ChunkedDecoder {
    /// A decoder for a verified streaming request: `decoded_len` from
    /// `x-amz-decoded-content-length`, `declared_trailers` from `x-amz-trailer`.
    pub fn new(
        verified: &Verified,
        decoded_len: u64,
        declared_trailers: Vec<String>,
        limits: ChunkedLimits,
    ) -> Self {
        let signer = matches!(
            verified.payload,
            PayloadMode::StreamingSigned | PayloadMode::StreamingSignedTrailer
        )
        .then(|| ChunkSigner {
            key: verified.signing_key.clone(),
            amz_date: verified.amz_date.clone(),
            scope: verified.scope.clone(),
        });
        ChunkedDecoder {
            signer,
            previous: verified.seed_signature,
            has_trailer: verified.payload.has_trailer(),
            declared_trailers: declared_trailers
                .into_iter()
                .map(|t| t.trim().to_ascii_lowercase())
                .collect(),
            declared_len: decoded_len,
            decoded_len: 0,
            limits,
            state: State::Header,
            line: Vec::new(),
            chunk_remaining: 0,
            chunk_hash: Sha256::new(),
            chunk_signature: [0; 32],
            trailers: Vec::new(),
            trailer_signature: None,
            trailer_lines: 0,
            leading_empty_seen: false,
        }
    }

    /// A decoder for a request whose `verified.payload` is a streaming mode,
    /// reading `x-amz-decoded-content-length` (required: MissingContentLength)
    /// and `x-amz-trailer` from its headers.
    pub fn from_request(
        verified: &Verified,
        headers: &HeaderMap,
        limits: ChunkedLimits,
    ) -> Result<Self, S3Error> {
        if !verified.payload.is_streaming() {
            return Err(S3Error::with_message(
                ErrorCode::InvalidRequest,
                "the body is not aws-chunked",
            ));
        }
        let decoded_len = headers
            .get("x-amz-decoded-content-length")
            .ok_or_else(|| S3Error::new(ErrorCode::MissingContentLength))?
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                S3Error::with_message(
                    ErrorCode::InvalidArgument,
                    "x-amz-decoded-content-length is not a number",
                )
            })?;
        let trailers = headers
            .get_all("x-amz-trailer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        Ok(Self::new(verified, decoded_len, trailers, limits))
    }

    /// Decodes from the front of `input`, consuming what it reads. Returns
    /// the next piece of payload (a slice of `input`), or `None` once `input`
    /// is used up (feed more) or the body is complete. Call it until `None`
    /// for each piece of input.
    pub fn decode(&mut self, input: &mut Bytes) -> Result<Option<Bytes>, ChunkedError> {
        loop {
            match self.state {
                State::Header => {
                    let Some(line) = self.take_line(input)? else {
                        return Ok(None);
                    };
                    self.start_chunk(&line)?;
                }
                State::Data => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let n = self.chunk_remaining.min(input.len() as u64) as usize;
                    let data = input.split_to(n);
                    if self.signer.is_some() {
                        self.chunk_hash.update(&data);
                    }
                    self.chunk_remaining -= n as u64;
                    self.decoded_len += n as u64;
                    if self.chunk_remaining == 0 {
                        self.end_chunk()?;
                        self.state = State::DataEnd;
                    }
                    return Ok(Some(data));
                }
                State::DataEnd => {
                    let Some(line) = self.take_line(input)? else {
                        return Ok(None);
                    };
                    if !line.is_empty() {
                        return Err(ChunkedError::Malformed(
                            "chunk data is longer than its size",
                        ));
                    }
                    self.state = State::Header;
                }
                State::FinalLine => {
                    let Some(line) = self.take_line(input)? else {
                        return Ok(None);
                    };
                    if !line.is_empty() {
                        return Err(ChunkedError::Malformed(
                            "the final chunk is not followed by CRLF",
                        ));
                    }
                    self.state = State::Done;
                }
                State::Trailers => {
                    let Some(line) = self.take_line(input)? else {
                        return Ok(None);
                    };
                    self.trailer_line(&line)?;
                }
                State::Done => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    return Err(ChunkedError::TrailingData);
                }
            }
        }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Ends the body (the input is exhausted). Returns the trailers (lower-case
    /// names; the signature left out) for `ChecksumSet::finish`. A body cut
    /// short is `Truncated`. A missing last CRLF after complete trailers, or
    /// after a final chunk without trailers, is forgiven: everything signed
    /// has been checked by then.
    pub fn finish(&mut self) -> Result<Vec<(String, String)>, ChunkedError> {
        match self.state {
            State::Done => {}
            State::FinalLine if self.line.is_empty() => self.state = State::Done,
            State::Trailers
                if self.line.is_empty() && (self.trailer_lines > 0 || self.leading_empty_seen) =>
            {
                self.end_trailers()?
            }
            _ => return Err(ChunkedError::Truncated),
        }
        Ok(std::mem::take(&mut self.trailers))
    }

    /// Takes one CRLF-ended line from `input` (buffering a partial one), or
    /// `None` if the line is not complete yet.
    fn take_line(&mut self, input: &mut Bytes) -> Result<Option<Vec<u8>>, ChunkedError> {
        let newline = input.iter().position(|&b| b == b'\n');
        let take = newline.map_or(input.len(), |i| i + 1);
        if self.line.len() + take > self.limits.max_line {
            return Err(ChunkedError::LineTooLong(self.limits.max_line));
        }
        self.line.extend_from_slice(&input.split_to(take));
        if newline.is_none() {
            return Ok(None);
        }
        let mut line = std::mem::take(&mut self.line);
        if line.len() < 2 || line[line.len() - 2] != b'\r' {
            return Err(ChunkedError::Malformed("a line does not end with CRLF"));
        }
        line.truncate(line.len() - 2);
        Ok(Some(line))
    }

    fn start_chunk(&mut self, line: &[u8]) -> Result<(), ChunkedError> {
        let line = std::str::from_utf8(line)
            .map_err(|_| ChunkedError::Malformed("a chunk header is not ASCII"))?;
        let (size_hex, extension) = match line.split_once(';') {
            Some((s, e)) => (s, Some(e)),
            None => (line, None),
        };
        if size_hex.is_empty()
            || size_hex.len() > 16
            || !size_hex.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ChunkedError::Malformed("a chunk size is not hexadecimal"));
        }
        let size = u64::from_str_radix(size_hex, 16)
            .map_err(|_| ChunkedError::Malformed("a chunk size is not hexadecimal"))?;
        if self.signer.is_some() {
            let sig = extension
                .and_then(|e| e.strip_prefix("chunk-signature="))
                .ok_or(ChunkedError::Malformed(
                    "a signed chunk has no chunk-signature",
                ))?;
            if sig.len() != 64 || hex::decode_to_slice(sig, &mut self.chunk_signature).is_err() {
                return Err(ChunkedError::Malformed(
                    "a chunk-signature is not 64 hex digits",
                ));
            }
        }
        if size > self.limits.max_chunk_size {
            return Err(ChunkedError::ChunkTooLarge {
                size,
                limit: self.limits.max_chunk_size,
            });
        }
        let total = self.decoded_len.saturating_add(size);
        if total > self.declared_len {
            return Err(ChunkedError::LengthMismatch {
                declared: self.declared_len,
                actual: total,
            });
        }
        self.chunk_hash = Sha256::new();
        if size > 0 {
            self.chunk_remaining = size;
            self.state = State::Data;
            return Ok(());
        }
        // The final, empty chunk.
        if self.decoded_len != self.declared_len {
            return Err(ChunkedError::LengthMismatch {
                declared: self.declared_len,
                actual: self.decoded_len,
            });
        }
        self.end_chunk()?;
        self.state = if self.has_trailer {
            State::Trailers
        } else {
            State::FinalLine
        };
        Ok(())
    }

    /// Checks the signature of the chunk just read, which chains to the next.
    fn end_chunk(&mut self) -> Result<(), ChunkedError> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let hash = std::mem::take(&mut self.chunk_hash).finalize();
        let sts = signer.chunk_string(&self.previous, &hash);
        if !signer.key.verify(&sts, &self.chunk_signature) {
            return Err(ChunkedError::ChunkSignatureMismatch);
        }
        self.previous = self.chunk_signature;
        Ok(())
    }

    fn trailer_line(&mut self, line: &[u8]) -> Result<(), ChunkedError> {
        if line.is_empty() {
            // Some encoders put the empty chunk's CRLF before the trailers.
            if self.trailer_lines == 0 && !self.leading_empty_seen {
                self.leading_empty_seen = true;
                return Ok(());
            }
            return self.end_trailers();
        }
        self.trailer_lines += 1;
        if self.trailer_lines > self.limits.max_trailers {
            return Err(ChunkedError::TooManyTrailers(self.limits.max_trailers));
        }
        let line = std::str::from_utf8(line)
            .map_err(|_| ChunkedError::Malformed("a trailer is not UTF-8"))?;
        let (name, value) = line
            .split_once(':')
            .ok_or(ChunkedError::Malformed("a trailer is not name:value"))?;
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim().to_string();
        if name == "x-amz-trailer-signature" {
            let mut sig = [0u8; 32];
            if value.len() != 64 || hex::decode_to_slice(&value, &mut sig).is_err() {
                return Err(ChunkedError::Malformed(
                    "x-amz-trailer-signature is not 64 hex digits",
                ));
            }
            self.trailer_signature = Some(sig);
            return Ok(());
        }
        if self.trailer_signature.is_some() {
            return Err(ChunkedError::Malformed(
                "a trailer after the trailer signature",
            ));
        }
        if !self.declared_trailers.contains(&name) {
            return Err(ChunkedError::UndeclaredTrailer(name));
        }
        self.trailers.push((name, value));
        Ok(())
    }

    /// Checks the trailer signature (signed mode) once the trailers are in.
    fn end_trailers(&mut self) -> Result<(), ChunkedError> {
        if let Some(signer) = &self.signer {
            let sig = self
                .trailer_signature
                .ok_or(ChunkedError::MissingTrailerSignature)?;
            let sts = signer.trailer_string(&self.previous, &self.trailers);
            if !signer.key.verify(&sts, &sig) {
                return Err(ChunkedError::TrailerSignatureMismatch);
            }
        } else if self.trailer_signature.is_some() {
            return Err(ChunkedError::Malformed(
                "a trailer signature in an unsigned body",
            ));
        }
        self.state = State::Done;
        Ok(())
    }
}

#[cfg(test)]
#[path = "chunked_test.rs"]
mod tests;
