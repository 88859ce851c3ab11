//! The session's prepared statements, as chorus needs them to log an
//! execute (the text, its class, where its placeholders are, the parameter
//! types the client bound and the long data it sent) and to run a read on
//! a follower (whether it may, the tables it names for policy rules).

use crate::protocol::mysql::params::{self, ParamType};
use crate::protocol::mysql::wire::Malformed;
use crate::sql::mysql::MyClass;
use std::collections::HashMap;

#[derive(Debug)]
pub(super) struct Prepared {
    pub sql: String,
    pub class: MyClass,
    placeholders: Vec<usize>,
    params: u16,
    types: Option<Vec<ParamType>>,
    long_data: HashMap<u16, Vec<u8>>,
    /// A read that may run on a follower (see `reads::follower_safe`).
    pub follower_ok: bool,
    /// The tables it names, for policy rules.
    pub tables: Vec<String>,
    /// A write that generates values chorus makes literals: executed as
    /// text with its parameters inlined (`query::execute_as_text`).
    pub as_text: bool,
}

impl Prepared {
    pub fn new(sql: String, class: MyClass, placeholders: Vec<usize>, params: u16) -> Prepared {
        Prepared {
            sql,
            class,
            placeholders,
            params,
            types: None,
            long_data: HashMap::new(),
            follower_ok: false,
            tables: Vec::new(),
            as_text: false,
        }
    }

    /// An execute the leader does not run: note the types it binds, as the
    /// leader would have.
    pub fn note_types(&mut self, execute: &[u8]) -> Result<(), Malformed> {
        if let Some(t) = params::bound_types(execute, self.params)? {
            self.types = Some(t);
        }
        Ok(())
    }

    /// The execute for statement `id` on a server that prepared the same
    /// text; None when it cannot go there: long data was sent (it is on the
    /// leader's statement), a cursor was asked for (COM_STMT_FETCH follows
    /// on the leader), or the types were never bound.
    pub fn execute_elsewhere(&self, execute: &[u8], id: u32) -> Option<Vec<u8>> {
        let cursor = execute.get(5).copied().unwrap_or(0xFF);
        if !self.long_data.is_empty() || cursor != 0 {
            return None;
        }
        let types = match &self.types {
            Some(t) => t.as_slice(),
            None if self.params == 0 => &[],
            None => return None,
        };
        params::rebound(execute, self.params, id, types).ok()
    }

    /// The execute for the leader's own statement `id`: with the types
    /// bound explicitly when they are known (an execute a follower ran may
    /// have bound them), else as the client sent it.
    pub fn execute_on_leader(&self, execute: &bytes::Bytes, id: u32) -> bytes::Bytes {
        match &self.types {
            Some(t) if self.params > 0 => {
                params::rebound(execute, self.params, id, t).map(bytes::Bytes::from).unwrap_or_else(|_| execute.clone())
            }
            _ => execute.clone(),
        }
    }

    pub fn params(&self) -> u16 {
        self.params
    }

    /// COM_STMT_SEND_LONG_DATA: more of one parameter's value.
    pub fn long_data(&mut self, param: u16, data: &[u8]) {
        self.long_data.entry(param).or_default().extend_from_slice(data);
    }

    /// COM_STMT_RESET, or an execute consumed the long data.
    pub fn reset(&mut self) {
        self.long_data.clear();
    }

    /// The statement as the followers run it: parameters inlined as literals.
    pub fn inline(&mut self, execute: &[u8], charset: &str) -> Result<String, Malformed> {
        let values = params::literals(execute, self.params, &mut self.types, &self.long_data, charset)?;
        self.long_data.clear();
        params::inline(&self.sql, &self.placeholders, &values)
            .ok_or(Malformed("placeholders and parameters differ in number"))
    }
}
