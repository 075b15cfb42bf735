//! The store is private to its owner, and readers hold its lock.
