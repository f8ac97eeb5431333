//! The mailer binary: `run [--from-start]` (the default) and `check`.

fn main() -> anyhow::Result<()> {
    runtime::main::<mailer::Mailer>()
}
