//! [`LatentCodec`]: tonic's protobuf codec, with a decode failure blamed on its sender.
//!
//! tonic's `ProstCodec` reports every message that does not decode (malformed bytes, a wrong
//! wire type, a `Struct` nested past prost's recursion limit) as `INTERNAL`, so a client's
//! garbage looked like a server failure. This codec encodes and decodes exactly as
//! `ProstCodec` does, and gives a decode failure the status code of the message's
//! [`DecodeFault`]: `INVALID_ARGUMENT` for a request (the server decodes it, the client sent
//! it), `INTERNAL` for a response (the client decodes it, the server sent it). The generated
//! service and client code use it (`build.rs` sets the codec path and writes the table of
//! sides from the proto).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};

/// The status code of a message that fails to decode: who sent it is at fault.
pub trait DecodeFault {
    /// `INVALID_ARGUMENT` for requests, `INTERNAL` for responses.
    const CODE: Code;
}

/// The codec of the generated `latentdb.v1` server and client (see the module docs).
#[derive(Debug, Clone)]
pub struct LatentCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for LatentCodec<T, U> {
    fn default() -> Self {
        LatentCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for LatentCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + DecodeFault + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = tonic_prost::ProstEncoder<T>;
    type Decoder = LatentDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        LatentDecoder {
            inner: tonic_prost::ProstDecoder::new(BufferSettings::default()),
        }
    }
}

/// The decoder of [`LatentCodec`].
#[derive(Debug, Clone)]
pub struct LatentDecoder<U> {
    inner: tonic_prost::ProstDecoder<U>,
}

impl<U: Message + Default + DecodeFault> Decoder for LatentDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // ProstDecoder's only error is a prost decode error (as INTERNAL).
        self.inner
            .decode(buf)
            .map_err(|e| Status::new(U::CODE, bounded(e.message())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// prost's decode error text, which names no caller input, prefixed and kept short.
fn bounded(message: &str) -> String {
    let mut out = String::from("the message does not decode: ");
    out.push_str(crate::error::truncate(message, 200).as_ref());
    out
}
