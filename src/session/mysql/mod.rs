//! One MySQL client session: the command loop between a client and the
//! server connection it uses.
//!
//! Every command goes to the leader on a connection of the session's own,
//! logged in with the capabilities the client agreed with chorus, so the
//! server frames its answers exactly as the client expects and chorus relays
//! them packet by packet (see [`relay`]). Statement ids, `USE`, `SET` and
//! session variables are then the server's own and need no translation.
//! Each statement is classified ([`crate::sql::mysql`]); data-changing ones
//! are logged for the followers ([`replicate`]), unsafe ones refused
//! ([`query`]); plain reads go to fresh-enough followers ([`reads`]).

mod ddl;
mod internal;
mod kill;
mod local;
mod prepared;
mod query;
mod reads;
mod relay;
mod replicate;
mod temp;

pub use kill::SessionEntry;
pub use relay::unreachable_error;

use crate::backend::mysql::{LoginOptions, MyBackendError, MyServerConn};
use crate::context::MysqlContext;
use crate::frontend::mysql::auth::{Attempt, AuthError, Channel, authenticate};
use crate::frontend::mysql::handshake::parse_change_user;
use crate::protocol::mysql::consts::{cap, com, status};
use crate::protocol::mysql::error::ok_payload;
use crate::protocol::mysql::packet::write_payload;
use crate::protocol::mysql::{Expect, MyError, Packet, PacketError, PacketReader, code};
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum MySessionError {
    #[error("client disconnected")]
    ClientGone,
    #[error("client connection: {0}")]
    Client(PacketError),
    #[error("the client sent a malformed packet: {0}")]
    Malformed(String),
    #[error(transparent)]
    Backend(#[from] MyBackendError),
    #[error("chorus is shutting down")]
    Shutdown,
    #[error("killed by KILL CONNECTION")]
    Killed,
}

/// Who the session is, as the handshake settled it.
#[derive(Debug, Clone)]
pub struct MyLogin {
    /// The client's `program_name` connection attribute (policies match it
    /// as application_name).
    pub program: String,
    pub user: String,
    pub database: Option<String>,
    pub capabilities: u32,
    pub collation: u8,
    pub nonce: [u8; crate::auth::mysql::NONCE_LEN],
    pub tls: bool,
    pub host: String,
}

pub struct MySession<R, W> {
    ctx: Arc<MysqlContext>,
    id: u64,
    reader: PacketReader<R>,
    writer: W,
    out: BytesMut,
    leader: MyServerConn,
    login: MyLogin,
    /// Server status flags of the last answer (transaction open, autocommit).
    status: u16,
    stop: watch::Receiver<bool>,
    /// Replication bookkeeping of the open transaction and the session.
    log: replicate::LeaderLog,
    /// The LSNs taken in the open transaction (committed with it).
    uncommitted_lsn: i64,
    /// A commit whose acknowledgement (semi-sync / sync) is still to wait for.
    ack_lsn: Option<i64>,
    prepared: std::collections::HashMap<u32, prepared::Prepared>,
    /// What the client's last write left that chorus's steps after it wiped.
    after_write: Option<replicate::AfterWrite>,
    /// Reads on followers: connections, the session's position, its settings.
    reads: reads::FollowerReads,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> MySession<R, W> {
    pub fn new(
        ctx: Arc<MysqlContext>,
        id: u64,
        reader: PacketReader<R>,
        writer: W,
        leader: MyServerConn,
        login: MyLogin,
        stop: watch::Receiver<bool>,
    ) -> Self {
        MySession {
            ctx,
            id,
            reader,
            writer,
            out: BytesMut::with_capacity(16 * 1024),
            leader,
            login,
            status: status::AUTOCOMMIT,
            stop,
            log: Default::default(),
            uncommitted_lsn: 0,
            ack_lsn: None,
            prepared: Default::default(),
            after_write: None,
            reads: Default::default(),
        }
    }

    /// Serve commands until the client quits or the connection breaks.
    pub async fn run(mut self) {
        let span = tracing::debug_span!("mysql_session", id = self.id, user = %self.login.user);
        let _e = span.enter();
        let entry = std::sync::Arc::new(SessionEntry {
            user: parking_lot::Mutex::new(self.login.user.clone()),
            leader_thread: self.leader.hello.thread_id.into(),
            killed: tokio::sync::Notify::new(),
        });
        self.ctx.sessions.insert(self.id, entry.clone());
        let result = self.serve(&entry).await;
        self.ctx.sessions.remove(&self.id);
        match result {
            Ok(()) | Err(MySessionError::ClientGone) => {}
            Err(e) => tracing::debug!(error = %e, "session ended"),
        }
    }

    async fn serve(&mut self, entry: &SessionEntry) -> Result<(), MySessionError> {
        loop {
            let p = tokio::select! {
                p = self.reader.read_command() => p,
                _ = self.stop.changed(), if self.status & status::IN_TRANS == 0 => {
                    return Err(MySessionError::Shutdown);
                }
                _ = entry.killed.notified() => return Err(MySessionError::Killed),
            };
            let p = match p {
                Ok(p) => p,
                Err(PacketError::Closed) => return Err(MySessionError::ClientGone),
                Err(PacketError::TooLarge { size, limit }) => {
                    let e = MyError::new(
                        code::PACKET_TOO_LARGE,
                        format!("Got a packet bigger than chorus's limits.max_message_bytes ({size} > {limit} bytes)"),
                    );
                    self.error(1, &e).await?;
                    return Err(MySessionError::Client(PacketError::TooLarge { size, limit }));
                }
                Err(e) => return Err(MySessionError::Client(e)),
            };
            if !self.command(p).await? {
                return Ok(());
            }
            // COM_CHANGE_USER may have changed both.
            *entry.user.lock() = self.login.user.clone();
            entry.leader_thread.store(self.leader.hello.thread_id, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// One command; false when the client quit.
    async fn command(&mut self, p: Packet) -> Result<bool, MySessionError> {
        let reply_seq = p.seq.wrapping_add(1);
        let after_write = self.after_write.take();
        let Some(&cmd) = p.payload.first() else {
            self.error(reply_seq, &MyError::new(code::NET_READ, "empty command packet")).await?;
            return Ok(true);
        };
        match cmd {
            com::QUIT => return Ok(false),
            com::PING => {
                let ok = ok_payload(0, 0, self.status, 0);
                self.write(reply_seq, &ok).await?;
            }
            com::CHANGE_USER => self.change_user(&p).await?,
            com::STMT_SEND_LONG_DATA => self.long_data(&p).await?,
            com::STMT_CLOSE => {
                // No answer comes.
                if let Ok(id) = crate::protocol::mysql::wire::Reader::new(&p.payload[1..]).u32("statement id") {
                    self.prepared.remove(&id);
                    self.close_on_followers(id).await;
                }
                self.leader.send(0, &p.payload).await?;
            }
            com::QUERY => return self.query(&p, after_write).await,
            com::STMT_PREPARE => self.prepare(&p).await?,
            com::STMT_EXECUTE => self.execute(&p).await?,
            com::STMT_RESET => {
                if let Ok(id) = crate::protocol::mysql::wire::Reader::new(&p.payload[1..]).u32("statement id")
                    && let Some(s) = self.prepared.get_mut(&id)
                {
                    s.reset();
                }
                self.relay(&p, Expect::Single).await?;
            }
            com::RESET_CONNECTION => {
                self.relay(&p, Expect::Single).await?;
                self.reads.reset();
                self.log.reset();
                self.uncommitted_lsn = 0;
                self.prepared.clear();
            }
            com::PROCESS_KILL => {
                let id = p.payload.get(1..5).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                match id {
                    Some(id) => return self.kill(kill::KillTarget::Connection, u64::from(id), reply_seq).await,
                    None => self.error(reply_seq, &MyError::new(code::NET_READ, "malformed COM_PROCESS_KILL")).await?,
                }
            }
            com::PROCESS_INFO => {
                self.relay(&p, Expect::ResultSets).await?;
            }
            com::FIELD_LIST => {
                self.relay(&p, Expect::FieldList).await?;
            }
            com::STMT_FETCH => {
                self.relay(&p, Expect::Fetch).await?;
            }
            com::INIT_DB => {
                if !self.relay(&p, Expect::Single).await?.error {
                    let db = String::from_utf8_lossy(&p.payload[1..]).into_owned();
                    self.reads.session_statement(format!("USE `{}`", db.replace('`', "``")));
                    self.login.database = Some(db);
                    self.log.context = None;
                }
            }
            com::CREATE_DB | com::DROP_DB => {
                // The old commands for CREATE / DROP DATABASE: replicated as those.
                let name = String::from_utf8_lossy(&p.payload[1..]).replace('`', "``");
                let verb = if cmd == com::CREATE_DB { "CREATE" } else { "DROP" };
                self.logged_write(&p, vec![format!("{verb} DATABASE `{name}`")], &crate::sql::mysql::MyClass::Ddl)
                    .await?;
            }
            com::REFRESH | com::STATISTICS | com::SET_OPTION => {
                self.relay(&p, Expect::Single).await?;
            }
            com::SHUTDOWN | com::DEBUG | com::BINLOG_DUMP | com::REGISTER_SLAVE => {
                let e = MyError::new(
                    code::NOT_ALLOWED,
                    "this command is not available through chorus; connect to the server directly",
                );
                self.error(reply_seq, &e).await?;
            }
            other => {
                let e = MyError::new(code::UNKNOWN_COMMAND, format!("Unknown command 0x{other:02x}"));
                self.error(reply_seq, &e).await?;
            }
        }
        Ok(true)
    }

    /// COM_CHANGE_USER: authenticate the new user at chorus, then give the
    /// session a fresh server connection (nothing of the old session survives,
    /// as on a server).
    async fn change_user(&mut self, p: &Packet) -> Result<(), MySessionError> {
        let req = parse_change_user(&p.payload, self.login.capabilities)
            .map_err(|e| MySessionError::Malformed(e.to_string()))?;
        let mut seq = p.seq.wrapping_add(1);
        let nonce = self.login.nonce;
        let attempt = Attempt {
            user: &req.user,
            plugin: req.plugin.as_deref(),
            auth: &req.auth,
            can_switch: self.login.capabilities & cap::PLUGIN_AUTH != 0,
            tls: self.login.tls,
            host: &self.login.host,
        };
        let mut ch = Channel { reader: &mut self.reader, writer: &mut self.writer, seq: &mut seq };
        match authenticate(&mut ch, &self.ctx.users, &self.ctx.sha2_cache, &nonce, &attempt).await {
            Ok(()) => {}
            Err(AuthError::Denied(e)) => {
                // A failed change of user ends the connection, as on a server.
                self.error(seq, &e).await?;
                return Err(MySessionError::ClientGone);
            }
            Err(AuthError::Packet(e)) => return Err(MySessionError::Client(e)),
            Err(AuthError::Io(e)) => return Err(MySessionError::Client(PacketError::Io(e))),
        }
        let collation = req.collation.unwrap_or(self.login.collation);
        let opts = LoginOptions {
            database: req.database.as_deref(),
            capabilities: self.login.capabilities,
            collation,
            timeout: self.ctx.config.limits.connect_timeout,
        };
        match self.ctx.connect_leader(&opts).await {
            Ok(conn) => self.leader = conn,
            Err(MyBackendError::Server { error, .. }) => {
                self.error(seq, &error).await?;
                return Err(MySessionError::ClientGone);
            }
            Err(e) => {
                self.error(seq, &self.ctx.unreachable(&e)).await?;
                return Err(e.into());
            }
        }
        self.log.reset();
        self.reads.reset();
        self.uncommitted_lsn = 0;
        self.prepared.clear();
        self.login.user = req.user;
        self.login.database = req.database;
        self.login.collation = collation;
        self.status = status::AUTOCOMMIT;
        self.write(seq, &ok_payload(0, 0, self.status, 0)).await
    }

    async fn write(&mut self, seq: u8, payload: &[u8]) -> Result<(), MySessionError> {
        write_payload(&mut self.writer, seq, payload).await.map_err(|e| MySessionError::Client(e.into()))?;
        Ok(())
    }

    async fn error(&mut self, seq: u8, e: &MyError) -> Result<(), MySessionError> {
        self.write(seq, &e.payload()).await
    }
}
