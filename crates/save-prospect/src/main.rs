//! The save-prospect binary: `run [--from-start]` (the default), `migrate`, `check`.

fn main() -> anyhow::Result<()> {
    runtime::main::<save_prospect::SaveProspect>()
}
