//! The signup-web binary: `run` (the default; alias `serve`) and `check`.

fn main() -> anyhow::Result<()> {
    bus::runtime::main::<signup_web::Application>()
}
