//! Wire-protocol pieces shared by the client and server sides: PostgreSQL at
//! the top level, MySQL in [`mysql`].

pub mod array;
pub mod error;
pub mod message;
pub mod mysql;
pub mod rows;

pub use error::{ClientError, ServerError, sqlstate};
pub use message::{Fields, FrameError, Message, MessageReader, build};
