//! The session's prepared statements, as chorus needs them to log an
//! execute: the text, its class, where its placeholders are, the parameter
//! types the client bound and the long data it sent.

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
}

impl Prepared {
    pub fn new(sql: String, class: MyClass, placeholders: Vec<usize>, params: u16) -> Prepared {
        Prepared { sql, class, placeholders, params, types: None, long_data: HashMap::new() }
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
