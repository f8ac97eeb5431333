//! The dead-letter-notifier binary: `run` (the default) and `check`.

fn main() -> anyhow::Result<()> {
    runtime::main::<dead_letter_notifier::Notifier>()
}
