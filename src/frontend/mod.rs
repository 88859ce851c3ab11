//! Client-side wire protocols: how chorus talks to applications.

pub mod auth;
pub mod mysql;
pub mod startup;
