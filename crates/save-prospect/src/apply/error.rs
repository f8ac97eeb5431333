//! Why a batch was not applied.

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApplyError {
    /// The database failed or refused a statement.
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    /// An event refers to a prospect whose sign-up is not saved yet (it
    /// overtook it, or the sign-up is being retried): try again later.
    #[error("{0}")]
    NotYet(String),
    /// The streams could not be purged of what the batch is done with.
    #[error("purging the streams: {0:#}")]
    Streams(anyhow::Error),
}
