//! The parsers never crash: deep nesting, huge cycles and long lines give located errors.
