//! The session's temporary tables (see [`crate::sql::mysql::temp`]): what
//! touches only them runs on the leader unlogged; the set changes once a
//! CREATE / DROP of one succeeded there; a read that names one runs on the
//! leader (where they are), and so does every prepared read while the
//! session has any.

use super::{MySession, MySessionError};
use crate::sql::mysql::MyClass;
use crate::sql::mysql::lex::Token;
use crate::sql::mysql::temp::{self, Change, Verdict};
use tokio::io::{AsyncRead, AsyncWrite};

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> MySession<R, W> {
    /// `class` as the session's temporary tables make it: Local for what
    /// touches only them, refused for what mixes them with regular tables.
    pub(super) async fn temp_class(&mut self, toks: &[Token<'_>], class: MyClass) -> Result<MyClass, MySessionError> {
        let verb = |w: &str| matches!(toks.first(), Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
        if self.log.temps.is_empty() && !verb("CREATE") && !verb("DROP") {
            return Ok(class);
        }
        let db = self.context().await?.db;
        Ok(match temp::judge(toks, &class, &self.log.temps, db.as_deref()) {
            Verdict::Regular => class,
            Verdict::LeaderOnly(_) => MyClass::Local,
            Verdict::Refuse(why) => MyClass::Refuse(why),
        })
    }

    /// After a statement succeeded on the leader: what it did to the set.
    pub(super) async fn temp_changed(&mut self, toks: &[Token<'_>]) -> Result<(), MySessionError> {
        let Some(change) = temp::change(toks) else { return Ok(()) };
        let db = self.context().await?.db;
        match change {
            Change::Create(name) => {
                if let Some(key) = name.key(db.as_deref()) {
                    self.log.temps.insert(key);
                }
            }
            Change::Drop(names) => {
                for key in names.iter().filter_map(|n| n.key(db.as_deref())) {
                    self.log.temps.remove(&key);
                }
            }
        }
        Ok(())
    }
}
