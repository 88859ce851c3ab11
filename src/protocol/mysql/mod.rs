//! MySQL wire-protocol pieces shared by the client and server sides.

pub mod consts;
pub mod error;
pub mod packet;
pub mod params;
pub mod response;
pub mod wire;

pub use error::{MyError, code};
pub use packet::{Packet, PacketError, PacketReader};
pub use response::{Expect, Response, Step};
