//! Whether a node can serve.

/// Whether the node can serve, for `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}
