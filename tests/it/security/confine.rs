//! Every path from a layer, a context or an ADDed archive resolves inside its root.
