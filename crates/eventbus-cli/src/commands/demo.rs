//! `eventbus demo`: the original system's scenarios end to end.

use clap::Args;

use crate::context::Context;
use crate::exit::Exit;

/// Arguments of `demo`.
#[derive(Args, Debug)]
pub(crate) struct DemoArgs {
    /// Signals in the batch scenario.
    #[arg(long, default_value_t = 3000)]
    signals: usize,
}

pub(crate) async fn run(ctx: &Context, args: DemoArgs) -> anyhow::Result<Exit> {
    let _ = (ctx, args);
    anyhow::bail!("the demo needs the domain handlers (event-handlers), which are not built in yet")
}
