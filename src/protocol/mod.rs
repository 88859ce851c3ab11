//! PostgreSQL wire-protocol pieces shared by the client and server sides.

pub mod array;
pub mod error;
pub mod message;
pub mod rows;

pub use error::{ClientError, ServerError, sqlstate};
pub use message::{Fields, FrameError, Message, MessageReader, build};
