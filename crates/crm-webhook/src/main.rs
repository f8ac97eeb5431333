//! The crm-webhook binary: `run [--from-start]` (the default) and `check`.

fn main() -> anyhow::Result<()> {
    runtime::main::<crm_webhook::CrmWebhook>()
}
