//! EOF
