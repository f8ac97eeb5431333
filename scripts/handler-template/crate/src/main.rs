//! The __NAME__ binary: `run [--from-start]` (the default) and `check`.

fn main() -> anyhow::Result<()> {
    bus::runtime::main::<__CRATE__::__TYPE__>()
}
