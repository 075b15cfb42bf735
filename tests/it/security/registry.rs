//! Registries that fail transiently do not fail the build.
