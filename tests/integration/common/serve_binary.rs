//! The real binary: `foundry-proxy serve` as a child process wired to the emulator.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use foundry_proxy::emulator::identities as world;

const BIN: &str = env!("CARGO_BIN_EXE_foundry-proxy");

/// `serve` with every variable set for the emulator, plus `extra`.
pub(crate) fn serve(emulator_url: &str, extra: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .env_clear()
        .env("FOUNDRY_PROXY_LISTEN", "127.0.0.1:0")
        .env("AZURE_AUTHORITY_HOST", emulator_url)
        .env("FOUNDRY_ENDPOINT", emulator_url)
        .env("AZURE_TENANT_ID", world::TENANT_ID)
        .env("AZURE_CLIENT_ID", world::CLIENT_ID)
        .env("AZURE_CLIENT_SECRET", world::CLIENT_SECRET)
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Reads the "foundry-proxy listening on http://ADDR" line from stdout.
pub(crate) fn listening_url(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read stdout");
    line.trim()
        .strip_prefix("foundry-proxy listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned()
}
