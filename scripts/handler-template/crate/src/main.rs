//! The __NAME__ binary: `run [--from-start]` (the default) and `check`.

fn main() -> anyhow::Result<()> {
    runtime::main::<__CRATE__::__TYPE__>()
}
