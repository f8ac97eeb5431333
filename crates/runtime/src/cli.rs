//! Every binary's command line: `run` (the default), `check`, and the
//! service's own subcommands.

use std::ffi::OsString;

use clap::{Arg, ArgAction, Command, FromArgMatches as _, Subcommand};

use crate::service::Service;

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation<C> {
    /// `run` (or no subcommand): work until stopped.
    Run {
        /// `--from-start` (handlers only).
        from_start: bool,
    },
    /// `check`: exit 0 when the settings are valid and the dependencies answer.
    Check,
    /// One of the service's own subcommands.
    Extra(C),
}

/// The subcommands of a service that has none of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum NoCommands {}

/// The command line of `S`.
pub fn command<S: Service>() -> Command {
    let mut run = Command::new("run").about("Work until SIGTERM or Ctrl-C (the default)").visible_alias("serve");
    if S::OFFERS_FROM_START {
        run = run.arg(
            Arg::new("from-start")
                .long("from-start")
                .action(ArgAction::SetTrue)
                .help("When the durable consumer is created, start at the first event of the stream (replay the history) instead of at new events"),
        );
    }
    let check = Command::new("check")
        .about("Exit 0 when the settings are valid and NATS and the service's dependencies answer, 1 otherwise");
    S::Command::augment_subcommands(
        Command::new(S::NAME).version(env!("CARGO_PKG_VERSION")).about(S::ABOUT).subcommand(run).subcommand(check),
    )
}

/// Parses `args` (the program name first); prints help or the error and
/// exits when they ask for help or make no sense.
pub fn parse<S: Service>(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> Invocation<S::Command> {
    try_parse::<S>(args).unwrap_or_else(|error| error.exit())
}

/// [`parse`], returning the error instead of exiting.
pub fn try_parse<S: Service>(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
) -> Result<Invocation<S::Command>, clap::Error> {
    let matches = command::<S>().try_get_matches_from(args)?;
    Ok(match matches.subcommand() {
        None => Invocation::Run { from_start: false },
        Some(("run", run)) => Invocation::Run { from_start: S::OFFERS_FROM_START && run.get_flag("from-start") },
        Some(("check", _)) => Invocation::Check,
        Some(_) => Invocation::Extra(S::Command::from_arg_matches(&matches)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Context;

    #[derive(Default, serde::Deserialize)]
    struct Settings {
        nats: bus::NatsSettings,
        log: crate::telemetry::LogSettings,
        shutdown: crate::settings::ShutdownSettings,
    }
    crate::service_settings!(Settings);

    #[derive(Debug, PartialEq, Eq, clap::Subcommand)]
    enum Extra {
        /// Rebuilds something.
        Rebuild {
            #[arg(long)]
            all: bool,
        },
    }

    struct Handler;
    impl Service for Handler {
        const NAME: &'static str = "a-handler";
        const ABOUT: &'static str = "handles";
        const OFFERS_FROM_START: bool = true;
        type Settings = Settings;
        type Command = Extra;
        async fn run(_: Settings, _: Context) -> anyhow::Result<()> {
            Ok(())
        }
    }

    struct Web;
    impl Service for Web {
        const NAME: &'static str = "a-web";
        const ABOUT: &'static str = "serves";
        type Settings = Settings;
        type Command = NoCommands;
        async fn run(_: Settings, _: Context) -> anyhow::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn run_is_the_default_and_from_start_is_for_handlers() {
        assert_eq!(try_parse::<Handler>(["h"]).unwrap(), Invocation::Run { from_start: false });
        assert_eq!(try_parse::<Handler>(["h", "run", "--from-start"]).unwrap(), Invocation::Run { from_start: true });
        assert_eq!(try_parse::<Web>(["w", "serve"]).unwrap(), Invocation::Run { from_start: false });
        let error = try_parse::<Web>(["w", "run", "--from-start"]).expect_err("a web consumes nothing");
        assert_eq!(error.kind(), clap::error::ErrorKind::UnknownArgument);
    }

    #[test]
    fn check_and_the_services_own_subcommands() {
        assert_eq!(try_parse::<Web>(["w", "check"]).unwrap(), Invocation::Check);
        assert_eq!(
            try_parse::<Handler>(["h", "rebuild", "--all"]).unwrap(),
            Invocation::Extra(Extra::Rebuild { all: true })
        );
        let error = try_parse::<Web>(["w", "rebuild"]).expect_err("not a subcommand of this service");
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn help_names_the_service() {
        let help = command::<Handler>().render_help().to_string();
        assert!(help.contains("handles") && help.contains("rebuild") && help.contains("check"), "{help}");
    }
}
