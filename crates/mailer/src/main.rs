//! The mailer binary: `run [--from-start]` (the default) and `check`.

fn main() -> anyhow::Result<()> {
    bus::runtime::main::<mailer::Mailer>()
}
