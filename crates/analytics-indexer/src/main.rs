//! The analytics-indexer binary: `run` (the default), `reindex`, `check`.

fn main() -> anyhow::Result<()> {
    bus::runtime::main::<analytics_indexer::Application>()
}
