//! The signup-web binary: `run` (the default; alias `serve`) and `check`.

fn main() -> anyhow::Result<()> {
    runtime::main::<signup_web::Application>()
}
