//! The client's prepared statements, remembered by chorus so a statement parsed
//! on one server can be prepared lazily on any other server the session uses.

use crate::protocol::{Fields, Message};
use crate::sql::Classification;
use std::collections::HashMap;
use std::sync::Arc;

/// One statement as the client prepared it.
#[derive(Clone)]
pub struct Statement {
    /// The client's Parse message, replayed verbatim on other servers.
    pub parse: Message,
    pub sql: Arc<str>,
    pub class: Arc<Classification>,
    /// chorus captures the rows this write produces (`parse` is then chorus's
    /// rewritten Parse, with the extra RETURNING column).
    pub capture: Option<Arc<super::capture::CaptureSpec>>,
}

/// Decoded head of a Parse message: (statement name, query text).
pub fn parse_head(m: &Message) -> Option<(&str, &str)> {
    let mut f = Fields::new(m.body());
    Some((f.cstr()?, f.cstr()?))
}

/// Decoded head of a Bind message: (portal name, statement name).
pub fn bind_head(m: &Message) -> Option<(&str, &str)> {
    let mut f = Fields::new(m.body());
    Some((f.cstr()?, f.cstr()?))
}

/// Decoded Describe / Close: (kind 'S' or 'P', name).
pub fn target_head(m: &Message) -> Option<(u8, &str)> {
    let mut f = Fields::new(m.body());
    Some((f.u8()?, f.cstr()?))
}

/// Decoded Execute: portal name.
pub fn execute_head(m: &Message) -> Option<&str> {
    Fields::new(m.body()).cstr()
}

#[derive(Default)]
pub struct Statements {
    named: HashMap<Arc<str>, Statement, foldhash::fast::RandomState>,
    unnamed: Option<Statement>,
}

impl Statements {
    pub fn get(&self, name: &str) -> Option<&Statement> {
        if name.is_empty() { self.unnamed.as_ref() } else { self.named.get(name) }
    }

    /// Remember a Parse. A named statement that already exists is left alone:
    /// the server rejects the duplicate and the old one stays valid.
    pub fn define(&mut self, name: &str, stmt: Statement) {
        if name.is_empty() {
            self.unnamed = Some(stmt);
        } else if !self.named.contains_key(name) {
            self.named.insert(name.into(), stmt);
        }
    }

    /// The statement defined by Parse `original` is captured: it was sent as
    /// `parse`. (A duplicate Parse of an existing name changed nothing.)
    pub fn set_capture(
        &mut self,
        name: &str,
        original: &Message,
        parse: Message,
        spec: Arc<super::capture::CaptureSpec>,
    ) {
        let stmt = if name.is_empty() { self.unnamed.as_mut() } else { self.named.get_mut(name) };
        if let Some(s) = stmt
            && s.parse.frame == original.frame
        {
            s.parse = parse;
            s.capture = Some(spec);
        }
    }

    pub fn name_key(&self, name: &str) -> Option<Arc<str>> {
        self.named.get_key_value(name).map(|(k, _)| k.clone())
    }

    pub fn close(&mut self, name: &str) -> bool {
        if name.is_empty() { self.unnamed.take().is_some() } else { self.named.remove(name).is_some() }
    }

    /// Forget everything (after DISCARD ALL / DEALLOCATE ALL on the server).
    pub fn clear(&mut self) {
        self.named.clear();
        self.unnamed = None;
    }
}
