//! `xmpp-sip-gateway ctl …`: the command-line front end of the management API.
//! Owner: io-admin. `CtlArgs` is the clap subcommand `main.rs` mounts; `run` returns the
//! process exit code.

#[derive(Debug, clap::Args)]
pub struct CtlArgs {}

pub fn run(args: CtlArgs) -> i32 {
    let _ = args;
    todo!("io-admin")
}
