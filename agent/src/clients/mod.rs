//! Clients of the agent's outputs: `t3pressure top` and `t3pressure events`.

pub mod events;
pub mod manpage;
pub mod top;
