//! The frames the node and its renderer processes exchange over a pipe: a
//! 4-byte big-endian length, then that many bytes of JSON.
//!
//! The renderer reads and writes blocking (it does nothing else); the node
//! reads and writes through tokio, so the two halves of each direction are
//! written twice, over `std::io` and over `tokio::io`, with the same rules.

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame either side accepts: above any request body a node
/// takes, so a job always fits, and a length read from a broken stream
/// cannot make the reader allocate without bound.
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// `value` as one frame.
pub fn encode(value: &impl Serialize) -> io::Result<Vec<u8>> {
    let mut frame = vec![0; 4];
    serde_json::to_writer(&mut frame, value).map_err(io::Error::other)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(too_large(len));
    }
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// Writes `value` as one frame and flushes it.
pub fn write(w: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    w.write_all(&encode(value)?)?;
    w.flush()
}

/// Reads one frame: `None` when the stream ends before its first byte, an
/// error when it ends inside one.
pub fn read<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut head = [0; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut head[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let mut body = vec![0; body_len(head)?];
    r.read_exact(&mut body)?;
    decode(&body).map(Some)
}

/// Writes an encoded frame and flushes it.
pub async fn write_async(w: &mut (impl AsyncWrite + Unpin), frame: &[u8]) -> io::Result<()> {
    w.write_all(frame).await?;
    w.flush().await
}

/// [`read`] over tokio.
pub async fn read_async<T: DeserializeOwned>(
    r: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<T>> {
    let mut head = [0; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut head[got..]).await? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let mut body = vec![0; body_len(head)?];
    r.read_exact(&mut body).await?;
    decode(&body).map(Some)
}

fn body_len(head: [u8; 4]) -> io::Result<usize> {
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_FRAME {
        return Err(too_large(len));
    }
    Ok(len)
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> io::Result<T> {
    serde_json::from_slice(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn too_large(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("a frame of {len} bytes is over the limit of {MAX_FRAME}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn frames_read_back_in_order() {
        let mut stream = Vec::new();
        write(&mut stream, &json!({"a": 1})).unwrap();
        write(&mut stream, &"two").unwrap();
        assert_eq!(&stream[..4], &7u32.to_be_bytes());
        let mut r = stream.as_slice();
        assert_eq!(read::<Value>(&mut r).unwrap(), Some(json!({"a": 1})));
        assert_eq!(read::<String>(&mut r).unwrap().as_deref(), Some("two"));
        assert_eq!(read::<Value>(&mut r).unwrap(), None);
    }

    #[tokio::test]
    async fn the_async_halves_speak_the_same_frames() {
        let first = encode(&json!([1, 2])).unwrap();
        let mut stream = Vec::new();
        write_async(&mut stream, &first).await.unwrap();
        write(&mut stream, &json!("x")).unwrap();
        let mut r = stream.as_slice();
        assert_eq!(read::<Value>(&mut r).unwrap(), Some(json!([1, 2])));
        let mut r = &stream[first.len()..];
        assert_eq!(read_async::<Value>(&mut r).await.unwrap(), Some(json!("x")));
        assert_eq!(read_async::<Value>(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_stream_cut_inside_a_frame_is_an_error() {
        let frame = encode(&json!({"key": "value"})).unwrap();
        for cut in [1, 3, 4, frame.len() - 1] {
            let err = read::<Value>(&mut &frame[..cut]).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
            let err = read_async::<Value>(&mut &frame[..cut]).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}");
        }
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_reading_on() {
        let head = (MAX_FRAME as u32 + 1).to_be_bytes();
        let err = read::<Value>(&mut &head[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("over the limit"), "{err}");
    }

    #[test]
    fn a_body_that_is_not_the_expected_json_is_invalid_data() {
        let mut stream = 3u32.to_be_bytes().to_vec();
        stream.extend_from_slice(b"{x}");
        let err = read::<Value>(&mut stream.as_slice()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
