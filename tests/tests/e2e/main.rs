//! End-to-end tests against the real `tollgate` process, a module per area.

mod identity;
