//! Layers are what their digests claim: diff_id liars are refused, `store check` finds and repairs corruption.
