//! The analytics-indexer binary: `run` (the default), `reindex`, `check`.

fn main() -> anyhow::Result<()> {
    runtime::main::<analytics_indexer::Application>()
}
