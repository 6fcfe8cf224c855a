//! One module per subcommand.

pub(crate) mod copy;
pub(crate) mod dead_letters;
pub(crate) mod demo;
pub(crate) mod doctor;
pub(crate) mod health;
pub(crate) mod migrate;
pub(crate) mod outbox;
pub(crate) mod publish;
pub(crate) mod replay;
pub(crate) mod schema;
pub(crate) mod serve;
pub(crate) mod stats;
pub(crate) mod tail;
pub(crate) mod verify_copy;
