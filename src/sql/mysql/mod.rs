//! MySQL statements, pure: a lexer and the classification chorus routes and
//! replicates by.

pub mod classify;
pub mod ddl;
pub mod defaults;
pub mod generate;
pub mod lex;
pub mod order;
pub mod routine;
pub mod safety;
pub mod targets;
pub mod temp;
pub mod uservars;
pub mod utf8;

pub use classify::{MyClass, WeakIsolation, classify, may_commit_implicitly, multi_write_problem, sets_weak_isolation};
