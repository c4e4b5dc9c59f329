//! Supervision of instances: the pure lifecycle (`state`), restart delays
//! (`backoff`), and one actor task per instance (`task`) that carries out the
//! lifecycle's effects with the process module.

pub mod backoff;
pub mod keeper;
pub mod router;
pub mod state;
pub mod task;

pub use keeper::{AdoptedRun, InstanceRecord, Inventory, KeeperClient, RunTag};
pub use router::{ExitRouter, Route};
pub use state::{RestartReason, Status};
pub use task::{InstanceContext, InstanceHandle, InstanceView};
