//! The crm-webhook binary: `run [--from-start]` (the default) and `check`.

fn main() -> anyhow::Result<()> {
    bus::runtime::main::<crm_webhook::CrmWebhook>()
}
