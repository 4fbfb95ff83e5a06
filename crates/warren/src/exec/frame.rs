//! The frames of the exec protocol: what the runtime and a step's child process say to each
//! other over the child's stdin and stdout. Each frame is a 4-byte big-endian length, then that
//! many bytes of MessagePack: a map with named fields whose `t` says what it is. The full
//! protocol, with an example exchange, is in `docs/PROTOCOL.md` ("Steps in any language").

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The version of the exec protocol this runtime speaks.
pub const PROTOCOL: u32 = 1;

/// The largest frame either side may send (a payload is small: data rides in the store).
pub const MAX_FRAME: u32 = 64 << 20;

/// What the runtime sends a child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ToChild {
    /// Handle one message.
    Call(Box<Call>),
    /// The answer to a [`FromChild::Read`].
    Data {
        /// The request answered.
        req: u64,
        /// The bytes read (MessagePack bin).
        data: rmpv::Value,
    },
    /// The answer to a [`FromChild::Write`].
    Written {
        /// The request answered.
        req: u64,
        /// Where the bytes are now.
        uri: String,
        /// Their content hash, `sha256:…`.
        hash: String,
    },
    /// A [`FromChild::Read`] or [`FromChild::Write`] failed.
    Failed {
        /// The request answered.
        req: u64,
        /// Whether trying the message again may help.
        retryable: bool,
        /// Why.
        message: String,
    },
    /// Finish and exit: the worker is stopping. A closed stdin says the same.
    Stop,
}

/// One message for the child to handle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// This call's number; every answer to it names it.
    pub id: u64,
    /// The job (UUID text).
    pub job_id: String,
    /// The message (UUID text).
    pub message_id: String,
    /// The pipeline.
    pub pipeline: String,
    /// The step.
    pub step: String,
    /// Attempt number, 1 for the first.
    pub attempt: u32,
    /// Earlier deliveries of this message that were never acked.
    pub delivery_count: u32,
    /// The worker's id.
    pub worker: String,
    /// The step's parameters from the routing slip (a map; nil when none were given).
    pub params: rmpv::Value,
    /// The input payload.
    pub input: rmpv::Value,
    /// The input's schema id.
    pub schema: String,
    /// The model registry's namespace (see `registry_namespace`).
    pub registry: String,
}

/// What a child sends the runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum FromChild {
    /// The child's first frame: which protocol it speaks and what its step is.
    Hello {
        /// The protocol version (1).
        protocol: u32,
        /// The step's descriptor (the fields of the registry's `descriptor`).
        descriptor: rmpv::Value,
    },
    /// Call `id` succeeded with these outputs (exactly one unless the step fans out).
    Ok {
        /// The call.
        id: u64,
        /// The output payloads.
        outputs: Vec<rmpv::Value>,
    },
    /// Call `id` failed.
    Error {
        /// The call.
        id: u64,
        /// Retry through the delay queues (`true`) or dead-letter at once (`false`).
        retryable: bool,
        /// Why, for the dead-letter queue's `warren-error` header.
        message: String,
    },
    /// A `report` event for call `id`'s job (metrics, a note).
    Report {
        /// The call.
        id: u64,
        /// What to report.
        detail: rmpv::Value,
    },
    /// Read an input by name for call `id`: an artifact URI of the store, or `data:PATH` in
    /// the workers' data root (the runtime's rules: nothing outside it).
    Read {
        /// The call.
        id: u64,
        /// This request's number, answered by [`ToChild::Data`] or [`ToChild::Failed`].
        req: u64,
        /// What to read.
        name: String,
    },
    /// Store bytes as `name` under the job's step key (`{pipeline}/{job}/{step}/{name}`).
    Write {
        /// The call.
        id: u64,
        /// This request's number, answered by [`ToChild::Written`] or [`ToChild::Failed`].
        req: u64,
        /// The artifact's name.
        name: String,
        /// The bytes (MessagePack bin).
        data: rmpv::Value,
    },
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The other side closed the pipe (the child exited).
    #[error("the pipe closed")]
    Closed,
    /// Reading or writing the pipe failed.
    #[error("pipe: {0}")]
    Io(#[from] std::io::Error),
    /// A length above [`MAX_FRAME`].
    #[error("a frame of {0} bytes is above the limit of {MAX_FRAME}")]
    TooLong(u32),
    /// Not a frame of the protocol.
    #[error("not a frame of the exec protocol: {0}")]
    Malformed(String),
}

/// Writes one frame.
pub async fn write<W: AsyncWriteExt + Unpin, T: Serialize>(w: &mut W, frame: &T) -> Result<(), FrameError> {
    let body = rmp_serde::to_vec_named(frame).map_err(|e| FrameError::Malformed(e.to_string()))?;
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLong(u32::MAX))?;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong(len));
    }
    let mut bytes = Vec::with_capacity(body.len() + 4);
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&body);
    w.write_all(&bytes).await.map_err(closed)?;
    w.flush().await.map_err(closed)
}

/// Reads one frame.
pub async fn read<R: AsyncReadExt + Unpin, T: serde::de::DeserializeOwned>(r: &mut R) -> Result<T, FrameError> {
    let len = r.read_u32().await.map_err(closed)?;
    if len > MAX_FRAME {
        return Err(FrameError::TooLong(len));
    }
    let mut body = vec![0; len as usize];
    r.read_exact(&mut body).await.map_err(closed)?;
    rmp_serde::from_slice(&body).map_err(|e| FrameError::Malformed(e.to_string()))
}

fn closed(e: std::io::Error) -> FrameError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::BrokenPipe => FrameError::Closed,
        _ => FrameError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_with_binary_data() {
        let mut buf = Vec::new();
        let frame =
            FromChild::Write { id: 3, req: 1, name: "m.bin".into(), data: rmpv::Value::Binary(vec![0, 255, 7]) };
        write(&mut buf, &frame).await.unwrap();
        assert_eq!(u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize, buf.len() - 4);
        let back: FromChild = read(&mut buf.as_slice()).await.unwrap();
        assert_eq!(back, frame);
    }

    #[tokio::test]
    async fn a_short_pipe_is_closed_and_garbage_is_malformed() {
        let e = read::<_, FromChild>(&mut [0u8, 0, 0, 9, 1].as_slice()).await.unwrap_err();
        assert!(matches!(e, FrameError::Closed), "{e}");
        let mut buf = 3u32.to_be_bytes().to_vec();
        buf.extend_from_slice(&[0xc1, 0xc1, 0xc1]);
        let e = read::<_, FromChild>(&mut buf.as_slice()).await.unwrap_err();
        assert!(matches!(e, FrameError::Malformed(_)), "{e}");
        let e = read::<_, FromChild>(&mut (MAX_FRAME + 1).to_be_bytes().as_slice()).await.unwrap_err();
        assert!(matches!(e, FrameError::TooLong(_)), "{e}");
    }
}
